"""Schema inference on realistic mixed manifests written with real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from polyfuse.config import ConfigError
from polyfuse.data.manifest import read_manifest
from polyfuse.data.schema import ROLES, infer_schema
from polyfuse.errors import DataError

N = 24


def _mixed_manifest(root: Path) -> Path:
    """A manifest with every kind of column, plus a few broken cells (rows 3, 5, 7, 9, 11)."""
    rng = np.random.default_rng(0)
    for sub in ("img", "aud", "seq"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rows = []
    words = ["great", "fabric", "too", "small", "lovely", "colour", "returned", "it", "fits", "well"]
    for i in range(N):
        Image.new("RGB", (16, 12), (i * 10, 50, 90)).save(root / "img" / f"{i}.png")
        sf.write(root / "aud" / f"{i}.wav", (0.1 * rng.standard_normal(400)).astype(np.float32), 8000)
        np.save(root / "seq" / f"{i}.npy", rng.standard_normal((6, 3)).astype(np.float32))
        rows.append(
            {
                "sample_id": f"s{i:03d}",
                "photo": f"img/{i}.png",
                "voice": f"aud/{i}.wav",
                "sensor": f"seq/{i}.npy",
                "Review Text": " ".join(rng.choice(words, size=6 + i % 5)),
                "age": str(20 + i),
                "price": round(float(rng.uniform(5, 80)), 2),
                "colour": ["red", "blue", "green", "black"][i % 4],
                "on_sale": i % 2,
                "rating": [1, 2, 3, 4, 5][i % 5],
                "label": ["yes", "no"][i % 3 == 0],
                "empty": "",
            }
        )
    rows[3]["photo"] = "img/missing.png"
    rows[5]["age"] = "abc"
    rows[7]["age"] = "inf"
    rows[9]["voice"] = "aud/notes.txt"
    rows[11]["photo"] = "../outside.png"
    (root / "img" / "13.png").write_bytes((root / "img" / "13.png").read_bytes()[:30])  # corrupt
    (root / "seq" / "15.npy").write_bytes((root / "seq" / "15.npy").read_bytes()[:-20])  # truncated
    rows[17]["label"] = ""
    path = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_roles_inputs_and_problems_on_a_mixed_manifest(tmp_path: Path) -> None:
    path = _mixed_manifest(tmp_path)
    frame = read_manifest(path)
    schema = infer_schema(frame, tmp_path, labels=["label"], sample=None)
    roles = {name: info.role for name, info in schema.columns.items()}
    assert roles == {
        "sample_id": "id",
        "photo": "image",
        "voice": "audio",
        "sensor": "sequence",
        "Review Text": "text",
        "age": "numeric",  # 22 numbers, "abc" and "inf" reported below
        "price": "numeric",
        "colour": "categorical",
        "on_sale": "categorical",  # integers with 2 distinct values
        "rating": "numeric",
        "label": "label",
        "empty": "ignore",
    }
    assert all(info.role in ROLES and info.reason for info in schema.columns.values())
    assert schema.columns["colour"].unique == 4 and schema.columns["colour"].examples == ["red", "blue", "green"]
    assert schema.columns["label"].missing == 1 and schema.columns["empty"].missing == N
    assert schema.columns["photo"].files == {"checked": N, "unreadable": 3, "formats": {"16x12 RGB": N - 3}}

    assert schema.inputs() == {
        "photo": {"kind": "image", "column": "photo"},
        "voice": {"kind": "audio", "column": "voice"},
        "sensor": {"kind": "sequence", "column": "sensor"},
        "review_text": {"kind": "text", "column": "Review Text"},
        "tabular": {"kind": "tabular", "numeric": ["age", "price", "rating"], "categorical": ["colour", "on_sale"]},
    }

    found = {(p.row, p.column): p for p in schema.problems}
    assert "file not found" in found[(3, "photo")].reason and found[(3, "photo")].file == "img/missing.png"
    assert "escapes the data root" in found[(11, "photo")].reason
    assert "cannot decode image" in found[(13, "photo")].reason
    assert "truncated .npy" in found[(15, "sensor")].reason
    assert "unexpected extension '.txt'" in found[(9, "voice")].reason
    assert found[(5, "age")].reason == "not a number: 'abc'"
    assert "infinite" in found[(7, "age")].reason
    assert "1 row without a label (rows 17)" in found[(None, "label")].reason
    assert len(schema.problems) == 8


def test_sampling_limits_file_checks(tmp_path: Path) -> None:
    path = _mixed_manifest(tmp_path)
    schema = infer_schema(read_manifest(path), tmp_path, labels=["label"], sample=4)
    assert schema.columns["photo"].files["checked"] == 4
    assert schema.columns["photo"].missing == 0  # counts still cover every row
    assert schema.columns["age"].role == "numeric"  # value checks cover every row, not only the sample
    assert (5, "age") in {(p.row, p.column) for p in schema.problems}
    assert not [p for p in schema.problems if p.column == "photo" and p.row not in (0, 8, 15, 23)]
    unchecked = infer_schema(read_manifest(path), tmp_path, labels=["label"], check_files=False)
    assert unchecked.columns["photo"].role == "image" and unchecked.columns["photo"].files is None
    assert not [p for p in unchecked.problems if p.column in ("photo", "voice", "sensor")]


def test_overrides_win_and_are_validated(tmp_path: Path) -> None:
    path = _mixed_manifest(tmp_path)
    frame = read_manifest(path)
    schema = infer_schema(frame, tmp_path, labels=["label"], overrides={"rating": "categorical", "sensor": "ignore"},
                          check_files=False)
    assert schema.columns["rating"].role == "categorical" and schema.columns["rating"].reason == "set by override"
    assert "sensor" not in schema.inputs()
    with pytest.raises(ConfigError, match="unknown role 'picture'; allowed: image, audio"):
        infer_schema(frame, tmp_path, overrides={"photo": "picture"})
    with pytest.raises(ConfigError, match="overrides.nope: no such column"):
        infer_schema(frame, tmp_path, overrides={"nope": "image"})
    with pytest.raises(DataError, match="missing required column 'target'"):
        infer_schema(frame, tmp_path, labels=["target"])


def test_value_based_rules() -> None:
    n = 40
    frame = pd.DataFrame(
        {
            "Unnamed: 0": np.arange(n),  # a saved pandas index
            "row": np.arange(1, n + 1),  # row numbers
            "count": np.arange(n) % 7,
            "ok": [True, False] * (n // 2),
            "city": (["Paris", "Oslo", "Lima", "Rome", "Kyiv"] * 8),
            "name": [f"user{i}" for i in range(n)],  # many distinct short strings
            "title": [f"t{i}" for i in range(n)],
            "tags": [["a"], ["b"]] * (n // 2),
            "when": pd.date_range("2024-01-01", periods=n),
            "same": [7] * n,
        }
    )
    schema = infer_schema(frame, Path("."), check_files=False)
    roles = {name: info.role for name, info in schema.columns.items()}
    assert roles == {
        "Unnamed: 0": "id",
        "row": "id",
        "count": "numeric",
        "ok": "categorical",
        "city": "categorical",
        "name": "text",
        "title": "text",
        "tags": "ignore",
        "when": "ignore",
        "same": "ignore",  # one value in every row
    }


def test_unknown_extensions_animated_gifs_and_frame_folders(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(3)]
    for i in range(4):
        frames[0].save(tmp_path / f"clip{i}.gif", save_all=True, append_images=frames[1:])
        frames[0].save(tmp_path / f"still{i}.gif")
        folder = tmp_path / "frames" / str(i)
        folder.mkdir(parents=True)
        for j, frame in enumerate(frames):
            frame.save(folder / f"{j}.png")
    frame = pd.DataFrame(
        {
            "clip": [f"clip{i}.gif" for i in range(4)],
            "still": [f"still{i}.gif" for i in range(4)],
            "folder": [f"frames/{i}" for i in range(4)],
            "weird": [f"data/x{i}.xyz" for i in range(4)],
        }
    )
    schema = infer_schema(frame, tmp_path)
    roles = {name: info.role for name, info in schema.columns.items()}
    assert roles == {"clip": "video", "still": "image", "folder": "video", "weird": "ignore"}
    assert schema.columns["folder"].files["formats"] == {"8x8x3 frames": 4}
    assert [p.reason for p in schema.problems] == [
        "file paths with an unknown extension (.xyz); set its role with an override"
    ]


def test_unicode_and_long_text_columns() -> None:
    texts = ["😀 emoji café naïve", "x " * 3000, "שלום עולם and more words", "e\u0301 combining marks here"]
    schema = infer_schema(pd.DataFrame({"t": texts * 5}), Path("."), check_files=False)
    assert schema.columns["t"].role == "text"
    assert schema.columns["t"].examples[0] == "😀 emoji café naïve"
    assert len(schema.columns["t"].examples[1]) == 60 and schema.columns["t"].examples[1].endswith("…")
    assert schema.columns["t"].examples[2] == "שלום עולם and more words"


def test_label_problems_single_class_rows() -> None:
    frame = pd.DataFrame({"y": ["a"] * 5 + ["b"] * 5 + ["rare"], "x": np.arange(11.0)})
    schema = infer_schema(frame, Path("."), labels=["y"], check_files=False)
    assert [p.reason for p in schema.problems] == [
        "1 class with a single row ('rare'): it cannot appear in both train and test"
    ]
