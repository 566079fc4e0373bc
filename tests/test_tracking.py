"""Experiment tracking (``train.logger``): MLflow, TensorBoard and CSV on real tiny AV-MNIST runs; clear errors."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.config import Config, ConfigError
from polyfuse.errors import PolyfuseError
from polyfuse.train import tracking

runner = CliRunner()
#: tiny-avmnist, smaller: 64 rows per split, 4 batches per epoch, two epochs (a metric history of 2 points)
TINY = [
    "train.epochs=2", "data.max_rows=64", "model.encoders.audio=sequence_stats", "train.threads=1",
    "train.progress=false",
]


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest.py


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    pytest.importorskip("mlflow")
    out = tmp_path_factory.mktemp("tracking") / "mlflow-run"
    # csv too: one run checks what the CSV logger writes next to the others
    result = polyfuse.fit("tiny-avmnist", out=out, overrides=[*TINY, "train.logger=[tensorboard, mlflow, csv]"])
    return out, result


def _mlflow(out: Path) -> tuple[Any, Any]:
    from mlflow.tracking import MlflowClient

    state = json.loads((out / tracking.STATE_FILE).read_text())["mlflow"]
    assert state["tracking_uri"] == f"sqlite:///{out.resolve() / 'mlflow.db'}"  # the default store, under the run
    client = MlflowClient(state["tracking_uri"])
    return client, client.get_run(state["run_id"])


def test_mlflow_records_config_epochs_final_metrics_and_model_files(mlflow_run):
    out, result = mlflow_run
    client, run = _mlflow(out)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == out.name
    assert client.get_experiment(run.info.experiment_id).name == "polyfuse"
    params = run.data.params
    assert params["train.epochs"] == "2" and params["data.max_rows"] == "64"
    assert params["model.encoders.audio.name"] == "sequence_stats"
    assert params["train.logger"] == '["tensorboard", "mlflow", "csv"]'
    assert params["run_dir"] == str(out.resolve())
    # one validation point per epoch, at increasing steps
    history = client.get_metric_history(run.info.run_id, "valid/digit/acc")
    assert len(history) == 2 and history[0].step < history[1].step
    assert len(client.get_metric_history(run.info.run_id, "valid/loss")) == 2
    # the end-of-run evaluation equals metrics.json
    saved = json.loads((out / "metrics.json").read_text())
    for split in ("valid", "test"):
        for metric in ("acc", "f1", "auroc"):
            logged = client.get_metric_history(run.info.run_id, f"final/{split}/digit/{metric}")
            assert [m.value for m in logged] == [pytest.approx(saved[split]["digit"][metric], abs=1e-12)]
    assert saved["test"]["digit"]["acc"] == result.metrics["test"]["digit"]["acc"]
    # the model directory: a tag with its path and the model files as artifacts (checkpoints/ and tracker data left out)
    assert run.data.tags["polyfuse.run_dir"] == str(out.resolve())
    assert run.data.tags["polyfuse.artifacts"] == "complete"
    names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model.safetensors", "config.yaml", "metrics.json", "COMPLETE", "pipeline", "report.md"} <= names
    assert not names & {"checkpoints", "tensorboard", "logs", "mlflow.db", "mlartifacts", tracking.STATE_FILE}
    local = Path(client.download_artifacts(run.info.run_id, "model/model.safetensors", str(out.parent / "download")))
    assert local.read_bytes() == (out / "model.safetensors").read_bytes()
    # the saved model directory is still valid with the tracker files next to it
    assert polyfuse.load(out).classes("digit")


def test_csv_logger_writes_epoch_rows_and_tensorboard_its_events(mlflow_run):
    out, _ = mlflow_run
    with open(out / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    valid = [r for r in rows if r.get("valid/digit/acc")]
    assert [int(r["epoch"]) for r in valid] == [0, 1]
    assert any(r.get("final/test/digit/acc") for r in rows)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_default_logs_to_tensorboard_only(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "default"
    assert Config().train.logger_names() == ["tensorboard"]
    result = polyfuse.fit("tiny-avmnist", out=out, overrides=TINY)
    assert Config.from_yaml(out / "config.yaml").train.logger == "tensorboard"
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert len(events.Scalars("valid/digit/acc")) == 2  # one per epoch
    final = events.Scalars("final/test/digit/acc")
    assert [e.value for e in final] == [pytest.approx(result.metrics["test"]["digit"]["acc"], abs=1e-6)]
    assert "train/loss_epoch" in scalars
    for absent in ("logs", "mlflow.db", "mlartifacts", "wandb", tracking.STATE_FILE):
        assert not (out / absent).exists(), absent


@pytest.mark.parametrize(
    "value, message",
    [
        ("neptune", "train.logger: 'neptune' is not a logger; allowed: tensorboard, csv, mlflow, wandb"),
        (["tensorboard", "comet"], "train.logger: 'comet' is not a logger; allowed: tensorboard, csv, mlflow, wandb"),
        ([], "train.logger: empty"),
        (["mlflow", "csv", "mlflow"], "train.logger: 'mlflow' is named twice"),
    ],
)
def test_bad_logger_names_fail_naming_train_logger(value, message):
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[")):
        Config.from_dict({"train": {"logger": value}})


def test_cli_bad_logger_is_one_clear_line(tmp_path):
    res = runner.invoke(app, ["train", "tiny-avmnist", "--out", str(tmp_path / "r"), "train.logger=[tensorboard,neptune]"])
    assert res.exit_code == 2
    assert "train.logger: 'neptune' is not a logger; allowed: tensorboard, csv, mlflow, wandb" in res.output
    assert "Traceback" not in res.output


def test_list_and_single_names_round_trip_through_yaml(tmp_path):
    config = Config.from_dict({"train": {"logger": ["tensorboard", "mlflow"], "experiment": "exp", "tracking_uri": "sqlite:///x.db"}})
    path = tmp_path / "c.yaml"
    config.to_yaml(path)
    again = Config.from_yaml(path, ["train.logger=csv"])
    assert Config.from_yaml(path).train.logger_names() == ["tensorboard", "mlflow"]
    assert again.train.logger_names() == ["csv"] and again.train.experiment == "exp"


@pytest.mark.parametrize("name, extra", [("wandb", "polyfuse[wandb]"), ("mlflow", "polyfuse[tracking]")])
def test_missing_tracker_package_fails_before_training_with_the_install_hint(tmp_path, monkeypatch, name, extra):
    monkeypatch.setitem(sys.modules, name, None)  # as if not installed (an import of it raises ImportError)
    import polyfuse.data.prepare as prepare

    def no_data(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data were read before the tracker check")

    monkeypatch.setattr(prepare, "prepare_data", no_data)
    out = tmp_path / "run"
    with pytest.raises(PolyfuseError) as info:
        polyfuse.fit("tiny-avmnist", out=out, overrides=[*TINY, f"train.logger=[tensorboard, {name}]"])
    message = str(info.value)
    assert message == f"train.logger: {name!r} needs the {name} package, which is not installed: pip install {extra}"
    assert "\n" not in message
    assert not (out / "config.yaml").exists()
    res = runner.invoke(app, ["train", "tiny-avmnist", "--out", str(out), f"train.logger={name}"])
    assert res.exit_code == 2 and f"pip install {extra}" in res.output and "Traceback" not in res.output


def test_without_sqlalchemy_the_default_store_is_an_allowed_file_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(
        tracking.importlib.util, "find_spec", lambda name, *a: None if name == "sqlalchemy" else real(name, *a)
    )
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = tracking.default_tracking_uri(tmp_path / "run")
    assert uri == (tmp_path / "run" / "mlruns").resolve().as_uri()
    client = MlflowClient(uri)  # MLflow 3 refuses file stores unless MLFLOW_ALLOW_FILE_STORE is set
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "m", 1.0)
    assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}


def test_flatten_and_numeric_leaves():
    flat = tracking.flatten({"a": {"b": 1, "c": [1, 2], "d": None, "e": {}}, "f:g": "x"})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d": "null", "a.e": "{}", "f_g": "x"}
    leaves = tracking.numeric_leaves({"test": {"digit": {"acc": 0.5, "ok": True, "per_class": [1]}, "rows": 3}, "x": float("nan")}, "final")
    assert leaves == {"final/test/digit/acc": 0.5, "final/test/rows": 3.0}


@pytest.mark.slow
def test_resumed_run_continues_the_same_mlflow_run(tmp_path):
    pytest.importorskip("mlflow")
    out = tmp_path / "resumed"
    overrides = [o for o in TINY if not o.startswith("train.epochs")]
    polyfuse.fit("tiny-avmnist", out=out, overrides=[*overrides, "train.epochs=1", "train.logger=[mlflow, csv]"])
    first = json.loads((out / tracking.STATE_FILE).read_text())["mlflow"]["run_id"]
    # one more epoch: the resumed run reads its own config.yaml
    config_file = out / "config.yaml"
    config_file.write_text(config_file.read_text().replace("  epochs: 1\n", "  epochs: 2\n", 1))
    polyfuse.fit("tiny-avmnist", out=out, resume=True)
    client, run = _mlflow(out)
    assert run.info.run_id == first and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "valid/digit/acc")
    assert len(history) == 2 and history[0].step < history[1].step
    assert run.data.params["train.epochs"] == "1"  # params are write-once in MLflow; the first value stays
    assert (out / "logs" / "resume-1" / "metrics.csv").is_file() and (out / "logs" / "metrics.csv").is_file()


def test_wandb_runs_offline_into_the_run_directory(tmp_path: Path, monkeypatch) -> None:
    """W&B with no network: an offline run under <run>/wandb whose record file holds the config keys,
    the per-epoch validation metric and the final test metric with its value from metrics.json."""
    pytest.importorskip("wandb", reason="wandb is installed by `make test`; pip install polyfuse[wandb]")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    result = polyfuse.fit("tiny-avmnist", out=out, overrides=[*TINY, "train.logger=[wandb]"])
    records = list(out.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(records) == 1, list(out.glob("wandb/**"))
    data = records[0].read_bytes()
    for key in (b"train.lr", b"model.encoders.audio.name", b"valid/digit/acc", b"final/test/digit/acc"):
        assert key in data, key
    assert str(result.metrics["test"]["digit"]["acc"]).encode() in data  # the final value as logged
    assert not (out / "tensorboard").exists()  # only the loggers asked for
