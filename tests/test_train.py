"""Training end to end on real AV-MNIST rows: the run directory, reloading, CLI verbs, multi-task, DDP."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = polyfuse.fit("tiny-avmnist", out=out, overrides=["train.epochs=2"])
    return out, result


def test_run_directory_is_complete(tiny_run):
    out, result = tiny_run
    for name in ("COMPLETE", "config.yaml", "model.json", "model.safetensors", "metrics.json", "report.md",
                 "data_report.json", "history.json", "curves.png", "confusion_digit.png", "modality_contribution.png"):
        assert (out / name).is_file(), name
    assert (out / "pipeline" / "pipeline.json").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["digit"]) >= {"acc", "f1", "auroc"}
    assert set(metrics["contribution"]["without"]) == {"audio", "image"}
    report = (out / "report.md").read_text()
    assert "## Modality contribution" in report and "without image" in report
    assert len(json.loads((out / "history.json").read_text())) == 2  # one row per epoch


def test_reload_predicts_like_the_trained_model(tiny_run, avmnist):
    out, result = tiny_run
    model = polyfuse.load(out)
    rows = pd.read_csv(avmnist.test).head(20)
    preds = model.predict(rows, root=avmnist.root)
    assert len(preds) == 20
    probs = preds[[f"digit:p:{c}" for c in model.classes("digit")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert set(preds["digit"]) <= set(model.classes("digit"))
    # the reloaded model reproduces the test accuracy recorded at training time
    evaluation = model.evaluate()
    assert evaluation["metrics"]["digit"]["acc"] == pytest.approx(result.metrics["test"]["digit"]["acc"], abs=1e-6)


def test_learns_audio_digits_from_few_rows(tmp_path):
    result = polyfuse.fit(
        "avmnist-audio", out=tmp_path / "a",
        overrides=["data.max_rows=600", "data.batch_size=32", "train.epochs=6", "model.dim=32", "train.progress=false"],
    )
    assert result.metrics["test"]["digit"]["acc"] > 0.6  # chance is 0.1


def test_evaluation_lines_print_this_evaluations_metrics(tmp_path, capsys):
    """Without a progress bar, each evaluation's line shows that evaluation's metric, as history.json has it."""
    polyfuse.fit("tiny-avmnist", out=tmp_path / "r", overrides=["train.epochs=3"], progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("epoch ")]
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert len(lines) == len(history) == 3
    for line, row in zip(lines, history):
        fields = line.split("  ")
        assert fields[0] == f"epoch {int(row['epoch'])}" and fields[1] == f"step {int(row['step'])}"
        printed = dict(field.split(" ") for field in fields[2:])
        assert float(printed["valid/digit/acc"]) == pytest.approx(row["valid/digit/acc"], abs=1e-4)
        assert float(printed["valid/loss"]) == pytest.approx(row["valid/loss"], abs=1e-4)
        assert row["train/loss"] > 0


def test_training_loss_is_logged_per_epoch_and_every_n_steps(tmp_path):
    """train/loss_epoch: one value per epoch (also an epoch cut short by max_steps), as history.json has it;
    train/loss_step: at every log_every_n_steps-th step, as Lightning's own step logging wrote it."""
    import csv

    out = tmp_path / "r"
    # 96 training rows / batch 16 = 6 steps an epoch: max_steps 9 stops the second epoch after 3 steps
    polyfuse.fit("tiny-avmnist", out=out, progress=False, overrides=[
        "train.epochs=3", "train.max_steps=9", "train.log_every_n_steps=2", "train.logger=csv", "train.threads=1",
    ])
    history = json.loads((out / "history.json").read_text())
    assert [row["step"] for row in history] == [6.0, 9.0]
    with open(out / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epoch_means = [float(r["train/loss_epoch"]) for r in rows if r.get("train/loss_epoch")]
    assert epoch_means == pytest.approx([row["train/loss"] for row in history], abs=1e-6)
    assert [int(r["step"]) for r in rows if r.get("train/loss_step")] == [1, 3, 5, 7]
    assert not any(r.get("train/loss") for r in rows)  # the alias is for callbacks only


def test_multi_task_weights_and_metrics(tmp_path, avmnist):
    result = polyfuse.fit(
        "tiny-avmnist", out=tmp_path / "mt",
        overrides=["tasks.digit.column=label", "tasks.value.column=label", "tasks.value.type=regression",
                   "tasks.value.weight=0.1"],
    )
    assert set(result.metrics["test"]) >= {"digit", "value"}
    assert set(result.metrics["test"]["value"]) >= {"mae", "rmse"}
    model = polyfuse.load(tmp_path / "mt")
    preds = model.predict(pd.read_csv(avmnist.test).head(5), root=avmnist.root)
    assert preds["value"].dtype.kind == "f"


def test_cli_train_from_a_user_table_then_eval_and_predict(tmp_path, avmnist):
    rows = pd.read_csv(avmnist.train).head(120)
    rows["audio"] = [str(avmnist.root / p) for p in rows["audio"]]
    rows["image"] = [str(avmnist.root / p) for p in rows["image"]]
    rows["note"] = [f"a speaker says the digit {v}" if i % 3 else "" for i, v in enumerate(rows["label"])]
    table = tmp_path / "mine.csv"
    rows.drop(columns=["id"]).to_csv(table, index=False)
    out = tmp_path / "run"
    # medium's encoders and cross-validation, without its other candidates (the presets' tests select)
    preset = tmp_path / "medium-fused.yaml"
    preset.write_text("base: medium\nselection: {fusions: [], unimodal: false, linear: false, ensemble: 0}\n")
    res = runner.invoke(app, ["train", "--data", str(table), "--label", "label", "--out", str(out), "--no-progress",
                              "--preset", str(preset), "data.allow_outside_root=true", "train.epochs=1", "model.dim=16"])
    assert res.exit_code == 0, res.output
    # 120 rows: cross-validated, then refit; the fused model holds every input
    config = polyfuse.Config.from_yaml(out / "cv" / "late" / "fold0" / "config.yaml")
    kinds = {name: inp.kind for name, inp in config.data.inputs.items()}
    # the medium preset reads the text column twice (n-gram TF-IDF and a frozen MiniLM embedding)
    # and the series column twice (random-convolution and summary features)
    assert kinds["audio_rocket"] == kinds["audio_summary"] == "sequence" and kinds["image"] == "image"
    assert kinds["note_ngrams"] == "text" and kinds["note_minilm"] == "text"
    res = runner.invoke(app, ["eval", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert "acc" in json.loads(res.stdout)["metrics"]["label"]
    preds = tmp_path / "preds.csv"
    res = runner.invoke(app, ["predict", str(out), "--data", str(table), "--out", str(preds)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(preds)) == 120


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "avmnist-fused", "model.fusion.name=gatd"], "did you mean 'gated'"),
        (["train", "avmnist-fused", "model.encoders.image.depthh=3"], "model.encoders.image.depthh"),
        (["train", "no-such-recipe"], "neither a config file nor a recipe"),
        (["train", "avmnist-fused", "train.epochs=many"], "train.epochs: expected an integer"),
        (["eval", "/nonexistent/run"], "no such checkpoint directory"),
    ],
)
def test_cli_user_errors_are_one_clear_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_recipes_and_components_listings():
    res = runner.invoke(app, ["recipes", "--json"])
    names = {r["name"] for r in json.loads(res.stdout)}
    assert {"avmnist-fused", "avmnist-audio", "avmnist-image"} <= names
    res = runner.invoke(app, ["components", "--json"])
    listing = json.loads(res.stdout)
    assert listing == polyfuse.list_components()
    assert len(listing["fusions"]) >= 12 and "fit" in listing["fusions"] and "classification" in listing["heads"]
    for kind in ("image", "text", "audio", "tabular", "timeseries", "video"):
        assert listing["encoders"][kind], kind
    assert "vit" in listing["encoders"]["image"] and "sequence_rnn" in listing["encoders"]["timeseries"]
    res = runner.invoke(app, ["components", "--json", "--details"])
    kinds = {(r["kind"], r["name"]) for r in json.loads(res.stdout)}
    assert ("fusion", "fit") in kinds and ("encoder", "vit") in kinds


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_in_sync(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "polyfuse.cli", "train", "tiny-avmnist", "--out", str(out),
           "--strategy", "ddp", "--devices", "2", "--accelerator", "cpu", "train.max_steps=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["ranks_in_sync"] is True
