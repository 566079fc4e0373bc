"""Reading manifests: formats, typing of columns, and clear errors for broken tables."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polyfuse.data.manifest import read_manifest
from polyfuse.errors import DataError

UNUSUAL = [
    "emoji 😀🎉 and a flag 🇫🇷",
    "שלום עולם RTL text",  # right-to-left
    "e\u0301 combining acute, Z\u0336\u0337 strike",  # combining marks
    "tab\there, quotes \"inside\", comma, and newline\nin the cell",
]


def _write_all_formats(tmp_path: Path, frame: pd.DataFrame) -> dict[str, Path]:
    paths = {fmt: tmp_path / f"m.{fmt}" for fmt in ("csv", "tsv", "parquet", "jsonl")}
    frame.to_csv(paths["csv"], index=False)
    frame.to_csv(paths["tsv"], index=False, sep="\t")
    frame.to_parquet(paths["parquet"], index=False)
    frame.to_json(paths["jsonl"], orient="records", lines=True, force_ascii=False)
    return paths


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet", "jsonl"])
def test_formats_roundtrip_values_order_and_unicode(tmp_path: Path, fmt: str) -> None:
    long_text = "word " * 5000
    frame = pd.DataFrame(
        {
            "text": [*UNUSUAL, long_text, "NA", "None", "null"],
            "x": [3.5, -1.0, 0.0, 2.25, 1e-3, 7.0, 8.0, 9.0],
            "n": [5, 4, 3, 2, 1, 0, -1, -2],
        }
    )
    path = _write_all_formats(tmp_path, frame)[fmt]
    out = read_manifest(path, required_columns=["text", "x"])
    assert isinstance(out.index, pd.RangeIndex) and out.index.tolist() == list(range(8))
    assert out["text"].tolist() == frame["text"].tolist()  # exact round trip, "NA"/"None" stay text
    assert pd.api.types.is_float_dtype(out["x"]) and out["x"].tolist() == frame["x"].tolist()
    assert pd.api.types.is_integer_dtype(out["n"]) and out["n"].tolist() == list(range(5, -3, -1))


def test_csv_typing_missing_and_na_tokens(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "code,age,city,note,flag\n"
        "007,31,Paris,,true\n"
        "012,NA,NA,hello,false\n"
        "100,,London,  ,true\n",
        encoding="utf-8",
    )
    out = read_manifest(path)
    assert out["code"].tolist() == ["007", "012", "100"]  # leading zeros: identifiers stay text
    assert pd.api.types.is_float_dtype(out["age"])  # numbers with NA / empty -> float with NaN
    assert out["age"].iloc[0] == 31 and out["age"].iloc[1:].isna().all()
    assert out["city"].tolist() == ["Paris", "NA", "London"]  # "NA" is a city name in a text column
    assert pd.isna(out["note"].iloc[0]) and out["note"].iloc[1] == "hello" and out["note"].iloc[2] == "  "
    assert out["flag"].tolist() == ["true", "false", "true"]


def test_jsonl_mixed_types_nested_values_and_compression(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    rows = [
        {"age": 31, "tags": ["a", "b"], "text": "x"},
        {"age": "NA", "tags": [], "text": ""},
        {"age": 40.5, "tags": ["c"]},  # "text" key absent
    ]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = read_manifest(path)
    assert pd.api.types.is_float_dtype(out["age"]) and np.isnan(out["age"].iloc[1]) and out["age"].iloc[2] == 40.5
    assert out["tags"].tolist() == [["a", "b"], [], ["c"]]
    assert out["text"].iloc[0] == "x" and out["text"].iloc[1:].isna().all()


def test_missing_file_unknown_suffix_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest file not found") as err:
        read_manifest(tmp_path / "nope.csv")
    assert err.value.file == str(tmp_path / "nope.csv")
    (tmp_path / "m.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match=r"unknown manifest type '\.xlsx'; expected one of \.csv, \.tsv"):
        read_manifest(tmp_path / "m.xlsx")
    for name in ("e.csv", "e.parquet", "e.jsonl"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(DataError, match=r"empty file \(0 bytes\)"):
            read_manifest(tmp_path / name)
    (tmp_path / "h.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="header but no data rows"):
        read_manifest(tmp_path / "h.csv")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no JSON lines"):
        read_manifest(tmp_path / "blank.jsonl")


def test_parse_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,4,5\n")
    with pytest.raises(DataError, match="Expected 2 fields in line 3, saw 3") as err:
        read_manifest(tmp_path / "bad.csv")
    assert str(err.value).startswith(str(tmp_path / "bad.csv"))
    (tmp_path / "quote.csv").write_text('a,b\n"1,2\n')
    with pytest.raises(DataError, match="quote may be left open"):
        read_manifest(tmp_path / "quote.csv")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": 2,}\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match="line 2: expected a JSON object"):
        read_manifest(tmp_path / "list.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 definitely not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_manifest(tmp_path / "bad.parquet")
    (tmp_path / "latin.csv").write_bytes("name\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text"):
        read_manifest(tmp_path / "latin.csv")


@pytest.mark.parametrize(
    "name, text, looks",
    [
        ("semi.csv", "a;b;c\n1;2;3\n", "semicolon"),
        ("tab.csv", "a\tb\n1\t2\n", "tab"),
        ("pipe.csv", "a|b\n1|2\n", "pipe"),
        ("comma.tsv", "a,b\n1,2\n", "comma"),
    ],
)
def test_wrong_delimiter_is_named(tmp_path: Path, name: str, text: str, looks: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=f"it looks {looks}-separated"):
        read_manifest(tmp_path / name)


def test_duplicated_column_names(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("image,label,image,text,text\na.png,1,b.png,x,y\n")
    with pytest.raises(DataError, match="duplicated column names 'image', 'text'"):
        read_manifest(tmp_path / "d.csv")
    (tmp_path / "d.jsonl").write_text('{"a": 1, "b": 2}\n{"a": 1, "a": 2}\n')
    with pytest.raises(DataError, match="line 2: duplicated column name 'a'"):
        read_manifest(tmp_path / "d.jsonl")
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["x", "x"])
    pq.write_table(table, tmp_path / "d.parquet")
    with pytest.raises(DataError, match="duplicated column names 'x'"):
        read_manifest(tmp_path / "d.parquet")


def test_missing_required_columns_listed(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("image,label \na.png,1\n")
    with pytest.raises(DataError) as err:
        read_manifest(tmp_path / "m.csv", required_columns=["image", "label", "text"])
    message = str(err.value)
    assert "missing required columns 'label', 'text'" in message
    assert "columns present: 'image', 'label '" in message  # the stray space is visible


def test_bom_and_alternative_suffixes(tmp_path: Path) -> None:
    (tmp_path / "bom.csv").write_bytes("\ufeffimage,label\na.png,1\n".encode("utf-8"))
    assert list(read_manifest(tmp_path / "bom.csv", required_columns=["image"]).columns) == ["image", "label"]
    (tmp_path / "m.ndjson").write_text('{"a": 1}\n')
    assert read_manifest(tmp_path / "m.ndjson")["a"].tolist() == [1]
    pd.DataFrame({"a": [1, 2]}).to_parquet(tmp_path / "m.pq")
    assert read_manifest(tmp_path / "m.pq")["a"].tolist() == [1, 2]


def test_data_layer_imports_no_torch() -> None:
    """Inference without torch reuses these modules (numpy / pandas / Pillow / soundfile only)."""
    import subprocess
    import sys

    modules = "manifest paths readers schema splits inspect".split()
    code = "; ".join(f"import polyfuse.data.{m}" for m in modules) + "; import sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_an_unchanged_manifest_is_parsed_once_and_each_reader_gets_its_own_copy(tmp_path: Path, monkeypatch) -> None:
    import polyfuse.data.manifest as manifest

    path = tmp_path / "rows.csv"
    pd.DataFrame({"text": ["a", "b"], "y": [0, 1]}).to_csv(path, index=False)
    parses = []
    real = manifest._parse
    monkeypatch.setattr(manifest, "_parse", lambda *a: parses.append(a) or real(*a))
    first = read_manifest(path)
    first.loc[0, "text"] = "changed by the first reader"
    second = read_manifest(path)
    assert len(parses) == 1 and second.loc[0, "text"] == "a"
    pd.DataFrame({"text": ["a", "b", "c"], "y": [0, 1, 0]}).to_csv(path, index=False)  # the file changes
    assert len(read_manifest(path)) == 3 and len(parses) == 2
    with pytest.raises(DataError, match="missing required column"):
        read_manifest(path, required_columns=["label"])  # checked on a cached read too


def test_a_table_fit_parses_its_table_once(avmnist, tmp_path: Path, monkeypatch) -> None:
    import polyfuse
    import polyfuse.data.manifest as manifest
    from test_presets import avmnist_table  # tests/ is on sys.path

    path = avmnist_table(avmnist, tmp_path / "data", 60, extra_id=False)
    parsed = []
    real = manifest._parse
    monkeypatch.setattr(manifest, "_parse", lambda p, *a: parsed.append(Path(p).name) or real(p, *a))
    polyfuse.fit(str(path), label="digit", preset="fast", out=tmp_path / "run", progress=False,
                 overrides=["train.max_steps=4", "train.min_steps=0", "train.threads=1"])
    assert parsed.count("table.csv") == 1, parsed
