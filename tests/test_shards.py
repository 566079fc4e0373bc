"""Shards: written from a manifest with its problems reported, streamed with a plan that ranks,
workers and a resumed run can rely on (disjoint parts, the whole epoch, no row twice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.config import Config, ConfigError
from polyfuse.data.pipeline import DataPipeline
from polyfuse.data.shard_writer import write_shards
from polyfuse.data.shards import ShardIndex
from polyfuse.data.stream import ShardStream, served_per_worker, worker_pieces
from polyfuse.train.datamodule import StreamLoader

from data_fixtures import BadManifest, build_bad_manifest

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest.py


def _avmnist_manifest(directory: Path, rows: int) -> tuple[Path, Path]:
    """(manifest, root): the first ``rows`` rows of built-in AV-MNIST's training manifest."""
    import pandas as pd

    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    prepared = DATASETS.get("avmnist").factory()
    path = directory / "rows.csv"
    pd.read_csv(prepared.train).iloc[:rows].to_csv(path, index=False)
    return path, Path(prepared.root)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 AV-MNIST rows: 64 train (4 shards of 16), 16 valid, 16 test; written by the CLI with 2 workers."""
    work = tmp_path_factory.mktemp("shards")
    manifest, root = _avmnist_manifest(work, 96)
    out = work / "shards"
    result = runner.invoke(app, [
        "data", "shard", str(manifest), "--label", "label", "--out", str(out), "--root", str(root), "--workers", "2",
        "--rows-per-shard", "16", "--no-progress", "data.split.valid=0.166667", "data.split.test=0.166667",
    ])
    assert result.exit_code == 0, result.output
    assert "wrote 96 rows" in result.output
    return out


def _rows(examples: list) -> list[int]:
    return [ex.row for ex in examples]


def _stream(shards: Path, **kwargs) -> ShardStream:
    pipeline = DataPipeline.load(shards / "pipeline")
    return ShardStream(shards, pipeline, split="train", shuffle=True, batch_size=4, seed=3, buffer=8, **kwargs)


def _epoch(dataset: ShardStream, workers: int, epoch: int = 0) -> list[list[int]]:
    from torch.utils.data import DataLoader

    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=dataset.batch_size, num_workers=workers, collate_fn=_rows)
    batches = list(loader)
    assert len(batches) == len(loader)  # the batch count the trainer plans with is the one it gets
    return batches


def test_the_index_counts_every_row_once_and_the_rest_is_stored_beside_it(shards: Path) -> None:
    index = ShardIndex.load(shards)
    assert {s: index.rows(s) for s in ("train", "valid", "test")} == {"train": 64, "valid": 16, "test": 16}
    assert index.counts("train") == [16, 16, 16, 16]
    assert index.file_columns == ["audio", "image"]
    assert (shards / "pipeline" / "pipeline.json").is_file() and (shards / "config.yaml").is_file()
    labels = np.load(shards / "labels.npz")["label"]
    assert labels.shape == (64,) and labels.min() >= 0
    dataset = ShardStream(shards, DataPipeline.load(shards / "pipeline"), split="train", shuffle=False, batch_size=8)
    rows = _rows(list(dataset))
    assert len(rows) == len(set(rows)) == 64
    valid = _rows(list(ShardStream(shards, DataPipeline.load(shards / "pipeline"), split="valid", shuffle=False, batch_size=8)))
    assert not set(rows) & set(valid)


def test_one_or_two_workers_write_the_same_shards(shards: Path, tmp_path: Path) -> None:
    config = Config.from_yaml(shards / "config.yaml")
    summary = write_shards(config, tmp_path / "one", workers=1, rows_per_shard=16, progress=False)
    assert summary["rows"] == 96 and summary["workers"] == 1
    for tar in sorted(shards.glob("*.tar")):
        assert (tmp_path / "one" / tar.name).read_bytes() == tar.read_bytes(), tar.name
    with pytest.raises(polyfuse.errors.DataError, match="--overwrite"):
        write_shards(config, tmp_path / "one", progress=False)


def test_an_interrupted_sharding_resumes_to_the_same_shards(shards: Path, tmp_path: Path) -> None:
    config = Config.from_yaml(shards / "config.yaml")
    out = tmp_path / "again"
    write_shards(config, out, workers=2, rows_per_shard=16, progress=False)
    # as if killed while writing the third training shard: no index, that shard half-written, no record of it
    (out / "shards.json").unlink()
    (out / "train-000002.done.json").unlink()
    (out / "train-000002.tar").write_bytes(b"torn")
    with pytest.raises(polyfuse.errors.DataError, match="unfinished sharding; pass --resume"):
        write_shards(config, out, rows_per_shard=16, progress=False)
    written: list[str] = []
    summary = write_shards(config, out, rows_per_shard=16, resume=True, progress=False, on_shard=lambda r: written.append(r.file))
    assert written == ["train-000002.tar"] and summary["rows"] == 96
    for tar in sorted(shards.glob("*.tar")):
        assert (out / tar.name).read_bytes() == tar.read_bytes(), tar.name
    assert (out / "shards.json").read_text().split('"written"')[0] == (shards / "shards.json").read_text().split('"written"')[0]


def test_worker_pieces_cut_at_batches_and_cover_every_position() -> None:
    assert worker_pieces(10, 4, 2) == [(0, 4), (4, 10)]
    assert worker_pieces(10, 4, 3) == [(0, 4), (4, 8), (8, 10)]
    assert worker_pieces(3, 4, 2) == [(0, 0), (0, 3)]
    for n, batch, workers in ((97, 8, 3), (64, 4, 2), (5, 1, 4)):
        pieces = worker_pieces(n, batch, workers)
        assert pieces[0][0] == 0 and pieces[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
        assert sum(-(-(b - a) // batch) for a, b in pieces) == -(-n // batch)
    assert served_per_worker(5, [3, 3]) == [3, 2]
    assert served_per_worker(5, [3, 1]) == [3, 1]
    assert served_per_worker(0, [2, 2]) == [0, 0]


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_read_disjoint_parts_whose_union_is_the_epoch(shards: Path, workers: int) -> None:
    seen = []
    for rank in range(2):
        dataset = _stream(shards)
        dataset.set_rank(rank, 2)
        batches = _epoch(dataset, workers, epoch=1)
        assert len(batches) == 8  # 32 rows per rank in batches of 4
        seen.append([r for b in batches for r in b])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(_rows(list(ShardStream(
        shards, DataPipeline.load(shards / "pipeline"), split="train", shuffle=False, batch_size=4))))


def test_the_order_depends_on_the_epoch_and_the_seed_only(shards: Path) -> None:
    first = [r for b in _epoch(_stream(shards), 2, epoch=0) for r in b]
    again = [r for b in _epoch(_stream(shards), 2, epoch=0) for r in b]
    other = [r for b in _epoch(_stream(shards), 2, epoch=1) for r in b]
    assert first == again and sorted(first) == sorted(other) and first != other


@pytest.mark.parametrize("workers", [0, 2])
def test_a_pass_resumed_after_k_batches_serves_exactly_the_rest(shards: Path, workers: int) -> None:
    full = _epoch(_stream(shards), workers, epoch=2)
    for served in (3, 9, 16):
        dataset = _stream(shards)
        loader = StreamLoader(dataset, batch_size=4, num_workers=workers, collate_fn=_rows, epoch_of=lambda: 2)
        loader.load_state_dict({"epoch": 2, "batches": served})
        rest = list(loader)
        assert full[:served] + rest == full, served
        assert loader.state_dict() == {"epoch": 2, "batches": 16}


def test_training_from_shards_then_a_mid_epoch_crash_resumes_exactly(shards: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_resume import _Crash, assert_same_run
    import polyfuse.train.runner as runner_module

    overrides = [
        "train.epochs=2", "model.encoders.audio=sequence_cnn", "train.threads=1", "train.progress=false",
        "train.checkpoint_every_n_steps=2", "data.batch_size=16", "data.num_workers=2", "model.dim=32",
    ]
    config = Config.from_dict({"data": {"train": f"shards://{shards}"}}).with_overrides(overrides)
    full = polyfuse.fit(config, out=tmp_path / "full")
    assert full.metrics["steps_run"] == 8  # 64 training rows in batches of 16, 2 epochs
    assert full.metrics["data"] == f"shards://{shards}"
    out = tmp_path / "crashed"
    progress = runner_module._progress_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "_progress_callbacks", lambda show: [*progress(show), _Crash(step=6)])
        with pytest.raises(RuntimeError, match="simulated crash"):
            polyfuse.fit(config, out=out)
    polyfuse.fit(config, out=out, resume=True)
    assert_same_run(tmp_path / "full", out, history=False)
    manifest, root = _avmnist_manifest(tmp_path, 5)
    predictions = polyfuse.load(out).predict(manifest, root=root)
    assert len(predictions) == 5


def test_fixed_feature_encoders_train_from_shards_with_features_computed_per_batch(shards: Path, tmp_path: Path) -> None:
    from polyfuse.train.features import STREAM_FIT_ROWS

    stream = _stream(shards)
    stream.resume_batches(3)
    sample = stream.sample(10)
    assert len(sample) == 10 and len({ex.row for ex in sample}) == 10
    assert len({ex.row // 16 for ex in _stream(shards).sample(64)}) >= 4  # spread over the 4 shards' rows
    assert stream._resume_batches == 3  # the sample leaves the pass plan alone
    config = Config.from_dict({"data": {"train": f"shards://{shards}"}}).with_overrides([
        "model.encoders.image=image_pixels", "model.encoders.audio=sequence_rocket", "train.feature_cache=off",
        "train.epochs=2", "train.threads=1", "train.progress=false", "data.batch_size=16", "model.dim=32",
    ])
    result = polyfuse.fit(config, out=tmp_path / "run")
    features = result.metrics["features"]
    assert set(features) == {"image", "audio"}
    assert all(f["mode"] == "off" and f["fitted_on_streamed_rows"] == min(64, STREAM_FIT_ROWS) for f in features.values())
    manifest, root = _avmnist_manifest(tmp_path, 8)
    model = polyfuse.load(tmp_path / "run")
    for name in ("image", "audio"):  # the scalers fitted on the streamed sample travel with the model
        assert not torch.equal(model.model.encoders[name].feature_std, torch.ones_like(model.model.encoders[name].feature_std))
    predictions = model.predict(manifest, root=root)
    assert len(predictions) == 8 and predictions["problems"].fillna("").eq("").all()


def test_shards_refuse_what_they_cannot_honour(shards: Path, tmp_path: Path) -> None:
    config = Config.from_dict({"data": {"train": f"shards://{shards}", "valid": "other.csv"}})
    with pytest.raises(ConfigError, match="data.valid: not used with data.train: shards://"):
        polyfuse.fit(config, out=tmp_path / "a")
    with pytest.raises(polyfuse.errors.DataError, match="not a shard directory"):
        polyfuse.fit(Config.from_dict({"data": {"train": f"shards://{tmp_path}"}}), out=tmp_path / "b")
    config = Config.from_dict({"data": {"train": f"shards://{shards}"}, "model": {"encoders": {"image": "image_pixels"}}})
    with pytest.raises(ConfigError, match="model.encoders.image: a fixed-feature encoder.*train.feature_cache=off"):
        polyfuse.fit(config, out=tmp_path / "c")
    result = runner.invoke(app, ["train", "--data", f"shards://{shards}", "--preset", "best", "--out", str(tmp_path / "d")])
    assert result.exit_code != 0 and "presets plan from a table" in result.output


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> BadManifest:
    return build_bad_manifest(tmp_path_factory.mktemp("bad"), train_rows=400, valid_rows=100)


@pytest.mark.parametrize("policy", ["missing", "skip"])
def test_sharding_reports_the_broken_rows_as_a_training_run_does(bad: BadManifest, tmp_path: Path, policy: str) -> None:
    from polyfuse.data.prepare import prepare_data

    config = Config.from_yaml(bad.write_config(tmp_path / "config.yaml"), [f"data.missing={policy}"])
    summary = write_shards(config, tmp_path / "shards", workers=2, rows_per_shard=128, progress=False)
    written = json.loads((tmp_path / "shards" / "data_report.json").read_text())["entries"]
    expected = prepare_data(config, progress=False).report.entries
    key = lambda e: (e["split"], e["row"], e["column"])  # noqa: E731
    assert sorted(written, key=key) == sorted(expected, key=key)
    assert {key(e) for e in written} == bad.expected_keys()
    skipped = {(e["split"], e["row"]) for e in written if e["action"] == "skipped"}
    assert bool(skipped) == (policy == "skip")
    index = ShardIndex.load(tmp_path / "shards")
    rows = sum(1 for _ in open(bad.train)) + sum(1 for _ in open(bad.valid)) - 2
    assert summary["rows"] == index.rows("train") + index.rows("valid") == rows - len(skipped)


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_from_shards_and_end_in_sync(shards: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "polyfuse.cli", "train", "--data", f"shards://{shards}", "--out", str(out),
        "--strategy", "ddp", "--devices", "2", "--accelerator", "cpu", "--no-progress",
        "train.epochs=1", "data.batch_size=8", "data.num_workers=1", "model.encoders.audio=sequence_cnn", "model.dim=32",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    assert metrics["steps_run"] == 4  # 64 rows, 32 per rank, batches of 8


@pytest.mark.slow
def test_the_scale_benchmark_runs_in_its_tiny_version(tmp_path: Path) -> None:
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
    command = [sys.executable, str(bench), "--rows", "3000", "--sizes", "1000,3000", "--shard-rows", "1000",
               "--steps", "8", "--no-sweep", "--work", str(tmp_path), "--out", str(tmp_path / "scale.md")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "scale.json").read_text())
    assert set(report["sharding"]) == {"1", "2", "all"} and report["sharding"]["all"]["rows"] == 3000
    shards = [r for r in report["runs"] if r["source"] == "shards"]
    assert [r["rows"] for r in shards] == [1000, 3000] and all(r["steps"] == 8 and r["peak_rss_mb"] > 0 for r in shards)
    assert report["targets"]["rss_growth_from_shards"] == pytest.approx(
        max(r["peak_rss_mb"] for r in shards) / min(r["peak_rss_mb"] for r in shards) - 1, abs=1e-3)


@pytest.mark.slow
def test_two_ddp_processes_train_on_disjoint_rows_whose_union_is_each_epoch(shards: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).with_name("ddp_rows_script.py")
    done = subprocess.run([sys.executable, str(script), str(shards), str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    every = sorted(ex.row for ex in ShardStream(shards, DataPipeline.load(shards / "pipeline"), split="train", shuffle=False, batch_size=4))
    for epoch in ("0", "1"):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == 32 and not set(a) & set(b)
        assert sorted(a + b) == every
    assert ranks[0]["0"] != ranks[0]["1"]  # each epoch its own order


def test_fit_rows_and_shuffle_buffer_change_what_they_name(shards: Path, tmp_path: Path) -> None:
    from polyfuse.data.prepare import prepare_data

    config = Config.from_yaml(shards / "config.yaml")
    whole = prepare_data(config, progress=False, scan=False).pipeline.processors["image"].state_dict()
    sample = prepare_data(config.with_overrides(["data.fit_rows=3"]), progress=False, scan=False).pipeline.processors["image"].state_dict()
    assert whole["mean"] != sample["mean"]  # normalisation fitted on 3 sampled rows, not all 64
    streamed = Config.from_dict({"data": {"train": f"shards://{shards}", "shuffle_buffer": 2}})
    train = prepare_data(streamed, progress=False).datasets["train"]
    assert train.buffer == 2
    orders = []
    for buffer in (2, 64):
        train.buffer = buffer
        orders.append([r for b in _epoch(train, 0) for r in b])
    assert orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
