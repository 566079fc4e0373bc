"""Property tests: schema inference and the pipeline/collate path over random mixes of real, missing and broken cells.

Rows are drawn per modality from a pool of small real files (PNG of several sizes and modes,
WAV of several rates, channel counts and lengths, .npy sequences of several lengths), empty
cells and broken files; text, numbers, categories and labels are random (NaN, inf, Unicode).
Whatever the mix: nothing crashes (only PolyfuseErrors for tables that give nothing to fit),
row order is kept, ``present`` says exactly which cells were usable, and every label stays
with its ``row`` through ``DataPipeline.collate`` and the DataLoader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from polyfuse.config import DataConfig, InputConfig, TaskConfig
from polyfuse.data.collate import Collator
from polyfuse.data.dataset import MultimodalDataset
from polyfuse.data.labels import IGNORE_INDEX, label_key
from polyfuse.data.manifest import read_manifest
from polyfuse.data.pipeline import DataPipeline
from polyfuse.data.schema import ROLES, infer_schema
from polyfuse.errors import PolyfuseError
from data_fixtures import voice, write_bomb_png, write_truncated_wav
from polyfuse.train.datamodule import EpochSeededSampler

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LABELS = ("cat", "dog", "7", "émeu")
CATEGORIES = ("a", "b", "c")
#: Text without control / format characters and combining marks (a normalizer may remove those, leaving no token).
TEXT = st.text(
    st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd", "Po", "Sm", "So", "Zs"), blacklist_characters="\ufffd"),
    max_size=40,
)


@dataclass(frozen=True)
class Pool:
    root: Path
    good: dict[str, list[str]]  # kind -> usable files
    bad: dict[str, list[str]]  # kind -> broken files


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    root = tmp_path_factory.mktemp("pool")
    rng = np.random.default_rng(0)
    good: dict[str, list[str]] = {"image": [], "audio": [], "sequence": []}
    for i, (size, mode) in enumerate([((8, 8), "L"), ((12, 10), "RGB"), ((5, 9), "RGBA"), ((8, 8), "I;16")]):
        array = rng.integers(0, 255, (size[1], size[0], len(mode) if mode in ("RGB", "RGBA") else 1)).astype(np.uint8)
        image = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array)
        if mode == "I;16":  # 16-bit grayscale
            image = Image.fromarray(array.squeeze(-1).astype(np.uint16) * 257)
        else:
            image = image.convert(mode)
        image.save(root / f"img{i}.png")
        good["image"].append(f"img{i}.png")
    Image.fromarray(rng.integers(0, 255, (6, 7, 3)).astype(np.uint8)).save(root / "img.jpg")
    good["image"].append("img.jpg")
    for i, (rate, channels, seconds) in enumerate([(8000, 1, 0.1), (16000, 2, 0.05), (11025, 1, 0.3), (8000, 3, 0.02)]):
        sf.write(root / f"a{i}.wav", voice(i, rate=rate, seconds=seconds, channels=channels), rate)
        good["audio"].append(f"a{i}.wav")
    for i, frames in enumerate([1, 3, 12]):
        np.save(root / f"s{i}.npy", rng.normal(size=(frames, 3)).astype(np.float32))
        good["sequence"].append(f"s{i}.npy")
    bad: dict[str, list[str]] = {
        "image": ["zero.png", "bomb.png", "gone.png", "../up.png"], "audio": ["zero.wav", "cut.wav"],
        "sequence": ["nan.npy", "zero.npy"],
    }
    for name in ("zero.png", "zero.wav", "zero.npy"):
        (root / name).write_bytes(b"")
    write_bomb_png(root / "bomb.png", 9000, 9000)
    write_truncated_wav(root / "cut.wav", voice(1))
    np.save(root / "nan.npy", np.full((4, 3), np.nan, dtype=np.float32))
    return Pool(root, good, bad)


@st.composite
def rows(draw: st.DrawFn, pool: Pool) -> tuple[pd.DataFrame, dict[str, list[bool]]]:
    """A random table and, per input, whether each row's cell is usable."""
    n = draw(st.integers(1, 12))
    records, usable = [], {k: [] for k in ("image", "audio", "sequence", "text", "tabular")}
    for _ in range(n):
        record: dict[str, Any] = {}
        for kind in ("image", "audio", "sequence"):
            state = draw(st.sampled_from(["good", "good", "missing", "bad"]))
            record[kind] = None if state == "missing" else draw(st.sampled_from(getattr(pool, state)[kind]))
            usable[kind].append(state == "good")
        text = draw(st.one_of(st.none(), TEXT))
        record["text"] = text
        usable["text"].append(bool(text and text.strip()))
        record["size"] = draw(st.one_of(
            st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["12", "x", 1e308, -4e38, 1e30]),
        ))
        record["colour"] = draw(st.one_of(st.none(), st.sampled_from(CATEGORIES)))
        usable["tabular"].append(not (_empty(record["size"]) and record["colour"] is None))
        record["label"] = draw(st.one_of(st.none(), st.sampled_from(LABELS)))
        records.append(record)
    # row numbers as a carved split has them: increasing, not 0..n-1
    index = sorted(draw(st.sets(st.integers(0, 200), min_size=n, max_size=n)))
    return pd.DataFrame(records, index=index), usable


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _pipeline(frame: pd.DataFrame, root: Path) -> DataPipeline | None:
    data = DataConfig(inputs={
        "image": InputConfig("image", {"column": "image", "size": [6, 6], "channels": 1}),
        "audio": InputConfig("audio", {"column": "audio", "sample_rate": 8000, "duration": None}),
        "sequence": InputConfig("sequence", {"column": "sequence", "max_length": 8}),
        "text": InputConfig("text", {"column": "text", "vocab_size": 60, "max_length": 6}),
        "tabular": InputConfig("tabular", {"numeric": ["size"], "categorical": ["colour"]}),
    })
    try:
        return DataPipeline.fit(data, {"animal": TaskConfig(column="label")}, frame, root=root, source="rows.csv")
    except PolyfuseError:
        return None  # nothing usable to fit on (no readable image, no text, no label): refused cleanly


@given(data=st.data())
@SETTINGS
def test_pipeline_and_dataloader_keep_rows_presence_and_labels_aligned(pool: Pool, data: st.DataObject) -> None:
    frame, usable = data.draw(rows(pool))
    pipeline = _pipeline(frame, pool.root)
    if pipeline is None:  # refused: only right when an input has no usable cell or no row carries a label
        assert not all(any(usable[k]) for k in usable) or frame["label"].isna().all(), "a usable table was refused"
        return
    pipeline.save(pool.root / "saved")  # JSON (no NaN/inf allowed) whatever the statistics met
    pipeline = DataPipeline.load(pool.root / "saved")
    policy = data.draw(st.sampled_from(["missing", "skip"]))
    dataset = MultimodalDataset(frame, pipeline, split="valid", root=pool.root, source="rows.csv", policy=policy)
    dataset.scan(progress=False)
    position = {row: i for i, row in enumerate(frame.index)}
    complete = [all(usable[k][i] for k in usable) for i in range(len(frame))]
    expected_rows = [r for i, r in enumerate(frame.index) if policy == "missing" or complete[i]]
    assert dataset.rows == expected_rows  # order kept, exactly the rows the policy keeps

    shuffle = data.draw(st.booleans())
    batch_size = data.draw(st.integers(1, 5))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochSeededSampler(dataset, 3, shuffle=shuffle),
                        collate_fn=Collator(pipeline))
    seen: list[int] = []
    classes = [label_key(c) for c in pipeline.classes("animal")]
    for batch in loader:
        rows_in_batch = batch["row"].tolist()
        size = len(rows_in_batch)
        seen.extend(rows_in_batch)
        for name, tensors in batch["inputs"].items():
            assert all(t.shape[0] == size for t in tensors.values()), name
            assert all(bool(t.isfinite().all()) for t in tensors.values() if t.is_floating_point()), name
            assert batch["present"][name].tolist() == [usable[name][position[r]] for r in rows_in_batch], name
        for i, row in enumerate(rows_in_batch):
            label = frame.loc[row, "label"]
            want = classes.index(label_key(label)) if label is not None and label_key(label) in classes else IGNORE_INDEX
            assert int(batch["labels"]["animal"][i]) == want
        mask = batch["inputs"]["text"]["attention_mask"]
        assert (mask.sum(dim=1) > 0).tolist() == batch["present"]["text"].tolist()
        assert (batch["inputs"]["audio"]["lengths"] > 0).tolist() == batch["present"]["audio"].tolist()
    assert (seen if not shuffle else sorted(seen)) == (expected_rows if not shuffle else sorted(expected_rows))
    reported = {e["row"] for e in dataset.report.entries if e["input"] != "animal" and e["action"] != "imputed"}
    assert reported == {r for i, r in enumerate(frame.index) if not complete[i]}


CELLS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    TEXT, st.sampled_from(["img0.png", "a0.wav", "s1.npy", "gone.png", "../up.png", "zero.wav", "x.mp4", "NA", ""]),
)


@given(data=st.data())
@SETTINGS
def test_schema_inference_never_crashes_and_keeps_columns_and_rows(pool: Pool, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 10))
    names = data.draw(st.lists(st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=6),
                               min_size=1, max_size=5, unique=True))
    columns = {}
    for name in names:
        kind = data.draw(st.sampled_from(["mixed", "files", "numbers", "text"]))
        cell = {"mixed": CELLS, "files": st.sampled_from(pool.good["image"] + pool.bad["image"] + [None]),
                "numbers": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), "text": TEXT}[kind]
        columns[name] = data.draw(st.lists(cell, min_size=n, max_size=n))
    frame = pd.DataFrame(columns)
    label = data.draw(st.sampled_from([None, *names]))
    schemas = [infer_schema(frame, pool.root, labels=[label] if label else [])]
    # and the same table written to CSV and read back as a manifest
    path = pool.root / "table.csv"
    frame.to_csv(path, index=False)
    try:
        schemas.append(infer_schema(read_manifest(path), pool.root, labels=[label] if label else []))
    except PolyfuseError:
        pass  # e.g. a table whose every cell is empty has no data rows: a clear DataError
    for schema in schemas:
        assert list(schema.columns) == [str(c) for c in frame.columns]
        assert all(info.role in ROLES for info in schema.columns.values())
        if label:
            assert schema.columns[label].role == "label"
        for problem in schema.problems:
            assert problem.row is None or 0 <= problem.row < n
            assert problem.column in schema.columns
        for entry in schema.inputs().values():
            used = [entry["column"]] if "column" in entry else entry["numeric"] + entry["categorical"]
            assert set(used) <= set(schema.columns) and label not in used
