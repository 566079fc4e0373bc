"""DataPipeline: fitting on train only, batch layout, save/load round trip, raw rows, labels, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from polyfuse.config import ConfigError, DataConfig, InputConfig, TaskConfig
from polyfuse.data import DataPipeline, DataReport, RowContext
from polyfuse.errors import DataError

WORDS = ["red", "blue", "green", "circle", "square", "small", "large", "shape", "left", "right"]


def write_rows(root: Path, n: int, seed: int, bright: bool = False) -> pd.DataFrame:
    """n rows of real files: 8x8 grayscale PNG, 0.05 s WAV, .npy frames [T, 3], text, numbers, categories."""
    gen = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ["cat", "dog", "fox"][i % 3]
        low, high = (200, 256) if bright else (0, 128)
        img = f"img_{seed}_{i}.png"
        Image.fromarray(gen.integers(low, high, (8, 8), dtype=np.uint8)).save(root / img)
        wav = f"snd_{seed}_{i}.wav"
        sf.write(root / wav, (0.3 * gen.standard_normal(400)).astype(np.float32), 8000)
        seq = f"seq_{seed}_{i}.npy"
        np.save(root / seq, gen.normal(100.0 if bright else 0.0, 1.0, (3 + i % 4, 3)).astype(np.float32))
        rows.append(
            {
                "image": img, "sound": wav, "frames": seq,
                "caption": " ".join(gen.choice(WORDS, 4)),
                "age": float(1000 + i) if bright else float(20 + i % 30),
                "color": ["red", "green", "blue"][i % 3], "label": label, "score": float(i % 5),
            }
        )
    return pd.DataFrame(rows)


def data_config(**extra: object) -> DataConfig:
    return DataConfig(
        inputs={
            "image": InputConfig("image", {"column": "image"}),
            "sound": InputConfig("audio", {"column": "sound", "sample_rate": 8000, "duration": 0.04}),
            "frames": InputConfig("sequence", {"column": "frames"}),
            "caption": InputConfig("text", {"column": "caption", "vocab_size": 60, "max_length": 8}),
            "tab": InputConfig("tabular", {"numeric": ["age"], "categorical": ["color"]}),
        },
        **extra,  # type: ignore[arg-type]
    )


TASKS = {"animal": TaskConfig(column="label"), "score": TaskConfig(column="score", type="regression")}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[DataPipeline, pd.DataFrame, pd.DataFrame, Path]:
    root = tmp_path_factory.mktemp("pipe")
    train = write_rows(root, 12, seed=0)
    test = write_rows(root, 4, seed=1, bright=True)
    pipeline = DataPipeline.fit(data_config(), TASKS, train, root=root, source="train.csv")
    return pipeline, train, test, root


def encode(pipeline: DataPipeline, frame: pd.DataFrame, root: Path, split: str = "valid") -> list:
    return [
        pipeline.encode_row(r, RowContext(root=root, source="m.csv", row=i, split=split))
        for i, r in enumerate(frame.to_dict("records"))
    ]


def test_statistics_come_from_train_only(fitted) -> None:  # noqa: ANN001
    pipeline, train, test, root = fitted
    pixels = np.stack([np.asarray(Image.open(root / f), np.float64) / 255 for f in train["image"]])
    assert pipeline.processors["image"].transform.mean[0] == pytest.approx(pixels.mean(), rel=1e-6)
    assert pipeline.processors["tab"].mean["age"] == pytest.approx(train["age"].mean())
    frames = np.concatenate([np.load(root / f) for f in train["frames"]])
    np.testing.assert_allclose(pipeline.processors["frames"].mean, frames.mean(0), rtol=1e-5, atol=1e-6)
    # refitting with the (very different) test rows appended would change them: the check can fail
    both = DataPipeline.fit(data_config(), TASKS, pd.concat([train, test]), root=root, source="x.csv")
    assert both.processors["tab"].mean["age"] > 2 * pipeline.processors["tab"].mean["age"]
    assert pipeline.classes("animal") == ["cat", "dog", "fox"]
    assert pipeline.task_dims() == {"animal": 3, "score": 1}


def test_batch_layout_and_alignment(fitted) -> None:  # noqa: ANN001
    pipeline, train, _, root = fitted
    examples = encode(pipeline, train.iloc[:4], root)
    examples[2].inputs["caption"] = None  # a missing modality
    batch = pipeline.collate(examples)
    assert set(batch) == {"inputs", "present", "labels", "row"}
    specs = pipeline.specs()
    assert batch["inputs"]["image"]["pixels"].shape == (4, 1, 8, 8)
    assert batch["inputs"]["sound"]["waveform"].shape == (4, specs["sound"].num_samples)
    assert batch["inputs"]["frames"]["values"].shape[2] == specs["frames"].feature_dim == 3
    assert batch["inputs"]["frames"]["mask"].sum(1).tolist() == [3, 4, 5, 6]
    assert batch["inputs"]["caption"]["input_ids"].shape[1] <= 8
    assert batch["inputs"]["tab"]["numeric"].shape == (4, specs["tab"].num_numeric)
    assert batch["present"]["caption"].tolist() == [True, True, False, True]
    assert not batch["inputs"]["caption"]["attention_mask"][2].any()
    assert batch["row"].tolist() == [0, 1, 2, 3]
    classes = pipeline.classes("animal")
    assert [classes[i] for i in batch["labels"]["animal"]] == train["label"].iloc[:4].tolist()
    assert batch["labels"]["score"].dtype == np.float32
    np.testing.assert_array_equal(batch["labels"]["score"], train["score"].iloc[:4].to_numpy(np.float32))


def test_save_load_round_trip_gives_identical_arrays(fitted, tmp_path: Path) -> None:  # noqa: ANN001
    pipeline, train, test, root = fitted
    pipeline.save(tmp_path / "pipe")
    files = sorted(p.name for p in (tmp_path / "pipe").iterdir())
    assert files == ["caption.tokenizer.json", "pipeline.json"]
    json.loads((tmp_path / "pipe" / "pipeline.json").read_text())  # plain JSON
    loaded = DataPipeline.load(tmp_path / "pipe")
    assert loaded.specs() == pipeline.specs() and loaded.task_dims() == pipeline.task_dims()
    frame = pd.concat([train.iloc[:3], test])
    a, b = pipeline.collate(encode(pipeline, frame, root)), loaded.collate(encode(loaded, frame, root))
    for name in a["inputs"]:
        for key in a["inputs"][name]:
            np.testing.assert_array_equal(a["inputs"][name][key], b["inputs"][name][key], err_msg=f"{name}.{key}")
    for task in a["labels"]:
        np.testing.assert_array_equal(a["labels"][task], b["labels"][task])


def test_batch_from_rows_bytes_missing_columns_and_policies(fitted) -> None:  # noqa: ANN001
    pipeline, train, _, root = fitted
    first = train.iloc[0].to_dict()
    upload = dict(first, image=(root / first["image"]).read_bytes())  # the server passes file bytes
    no_text = {k: v for k, v in first.items() if k not in ("caption", "label", "score")}
    broken = dict(first, image="nope.png")
    batch, report = pipeline.batch_from_rows([first, upload, no_text, broken], root=root)
    np.testing.assert_array_equal(batch["inputs"]["image"]["pixels"][0], batch["inputs"]["image"]["pixels"][1])
    assert batch["present"]["caption"].tolist() == [True, True, False, True]
    assert batch["present"]["image"].tolist() == [True, True, True, False]
    assert batch["labels"]["animal"].tolist()[2] == -100 and np.isnan(batch["labels"]["score"][2])
    assert report.rows() == [2, 3]
    assert {e["column"] for e in report.entries} == {"caption", "image"}
    skipped, report = pipeline.batch_from_rows([first, broken, first], root=root, policy="skip")
    assert skipped["row"].tolist() == [0, 2] and report.rows(action="skipped") == [1]
    with pytest.raises(DataError) as info:
        pipeline.batch_from_rows([first, broken], root=root, policy="error", source="upload")
    assert (info.value.row, info.value.column) == (1, "image") and "nope.png" in str(info.value)
    with pytest.raises(ConfigError, match="data.missing"):
        pipeline.batch_from_rows([first], root=root, policy="drop")


def test_unseen_and_missing_labels_are_reported(fitted) -> None:  # noqa: ANN001
    pipeline, train, _, root = fitted
    rows = train.iloc[:3].copy()
    rows.loc[rows.index[1], "label"] = "wolf"
    rows.loc[rows.index[2], "label"] = None
    examples = encode(pipeline, rows, root, split="valid")
    report = DataReport()
    for ex in examples:
        assert report.record(ex.problems, split="valid", row=ex.row, file="valid.csv", policy="skip")
    labels = pipeline.collate(examples)["labels"]["animal"].tolist()
    assert labels[0] != -100 and labels[1:] == [-100, -100]
    assert report.rows() == [1, 2]
    unseen = next(e for e in report.entries if e["row"] == 1)
    assert unseen["action"] == "label ignored" and "wolf" in unseen["reason"] and unseen["column"] == "label"
    assert unseen["file"] == "valid.csv"


def test_report_save_and_summary(tmp_path: Path) -> None:
    report = DataReport()
    report.add(split="train", row=3, column="image", file="m.csv", reason="x.png: truncated", action="marked missing", problem="unreadable file")
    report.add(split="train", row=3, column="age", file="m.csv", reason="missing number", action="imputed", problem="number imputed")
    report.add(split="test", row=3, column="image", file="t.csv", reason="gone", action="skipped", problem="file missing or not allowed")
    summary = report.summary()
    assert summary["total"] == 2 and summary["entries"] == 3
    assert summary["by_split"] == {"train": 1, "test": 1}
    assert summary["by_reason"]["image: unreadable file"] == 1
    json_path, md_path = report.save(tmp_path)
    assert json.loads(json_path.read_text())["entries"][0]["row"] == 3
    text = md_path.read_text()
    assert "x.png: truncated" in text and "| train | m.csv | 3 | image |" in text
    assert DataReport.load(tmp_path).entries == report.entries


def test_empty_optional_cells_are_counted_as_missing_apart_from_problems(tmp_path: Path) -> None:
    report = DataReport()
    for row in range(654):  # a table where most rows simply have no sound
        report.add(split="train", row=row, column="sound", file="m.csv", reason="empty value", action="marked missing",
                   problem="empty value", input="sound")
    report.add(split="train", row=7, column="image", file="m.csv", reason="7.png: truncated", action="marked missing",
               problem="unreadable file", input="image")
    summary = report.summary()
    assert summary["missing"] == {"sound": 654}
    assert summary["total"] == 1 and summary["by_reason"] == {"image: unreadable file": 1}
    _, md = report.save(tmp_path)
    text = md.read_text()
    assert "missing: 654 rows of `sound`" in text and "Rows with a problem: 1 (1 entries)" in text
    assert "| train | m.csv | 7 | image |" in text and "| 8 | sound |" not in text


def test_config_and_column_errors(fitted) -> None:  # noqa: ANN001
    _, train, _, root = fitted
    bad = DataConfig(inputs={"image": InputConfig("image", {"column": "image", "colour": 3})})
    with pytest.raises(ConfigError, match=r"data.inputs.image.colour: unknown option"):
        DataPipeline.fit(bad, {}, train, root=root, source="m.csv")
    bad = DataConfig(inputs={"image": InputConfig("image", {"column": "image", "channels": 4})})
    with pytest.raises(ConfigError, match=r"data.inputs.image.channels"):
        DataPipeline.fit(bad, {}, train, root=root, source="m.csv")
    with pytest.raises(ConfigError, match=r"data.inputs.t.column: required"):
        DataPipeline.fit(DataConfig(inputs={"t": InputConfig("text", {})}), {}, train, root=root, source="m.csv")
    bad = DataConfig(inputs={"image": InputConfig("image", {"column": "picture"})})
    with pytest.raises(DataError) as info:
        DataPipeline.fit(bad, {"y": TaskConfig(column="target")}, train, root=root, source="m.csv")
    message = str(info.value)
    assert "m.csv" in message and "'picture'" in message and "'target'" in message and "caption" in message
    with pytest.raises(ConfigError, match="data.use"):
        DataPipeline.fit(data_config(use=["video"]), {}, train, root=root, source="m.csv")
    only = DataPipeline.fit(data_config(use=["tab"]), {}, train, root=root, source="m.csv")
    assert list(only.processors) == ["tab"]


def test_saved_pipeline_encodes_rows_without_torch(fitted, tmp_path: Path) -> None:  # noqa: ANN001
    """ONNX inference and the server reuse the pipeline: loading and encoding must not import torch."""
    import subprocess
    import sys

    pipeline, train, _, root = fitted
    pipeline.save(tmp_path / "pipe")
    train.iloc[:2].to_csv(tmp_path / "rows.csv", index=False)
    code = (
        "import sys, pandas as pd\n"
        "from polyfuse.data import DataPipeline\n"
        f"p = DataPipeline.load({str(tmp_path / 'pipe')!r})\n"
        f"batch, report = p.batch_from_rows(pd.read_csv({str(tmp_path / 'rows.csv')!r}), root={str(root)!r})\n"
        "assert batch['present']['image'].all() and len(report) == 0\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
