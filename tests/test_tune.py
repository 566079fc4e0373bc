"""`polyfuse tune` / `polyfuse.tune` on real AV-MNIST rows: the search, its files, the best model,
pruning, the seeded sampler, shared studies, the time limit and clear errors for a bad space."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.config import ConfigError
from polyfuse.predictor import Predictor
from polyfuse.recipes import load_recipe
from polyfuse.tuning import load_space, resolve_metric
from polyfuse.tuning.study import with_dataset_tasks

optuna = pytest.importorskip("optuna")
runner = CliRunner()

#: tiny trials: 96 rows, width 8-16, one epoch, one thread
TINY = ["train.threads=1", "train.epochs=1"]
SPACE = {
    "model.fusion.name": {"choices": ["concat", "gated"]},
    "model.dim": [8, 16],
    "train.lr": {"low": 1.0e-3, "high": 1.0e-2, "log": True},
    "model.fusion.dropout": {"low": 0.0, "high": 0.3},
}


def _space_file(folder: Path) -> Path:
    path = folder / "space.yaml"
    import yaml

    path.write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return path


def _rows(out: Path) -> list[dict[str, Any]]:
    with open(out / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _params(row: dict[str, Any]) -> tuple[str, ...]:
    return tuple(row[k] for k in SPACE)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> Any:
    out = tmp_path_factory.mktemp("tune") / "search"
    return polyfuse.tune("tiny-avmnist", SPACE, out=out, trials=4, seed=0, pruner="none", overrides=TINY)


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Path, Any]:
    """Two trials through the CLI with a threshold no accuracy reaches: every trial stops after its first epoch."""
    folder = tmp_path_factory.mktemp("pruned")
    out = folder / "out"
    res = runner.invoke(app, ["tune", "tiny-avmnist", "--space", str(_space_file(folder)), "--trials", "2", "--seed", "0",
                              "--pruner", "threshold", "--prune-threshold", "1.01", "--out", str(out), *TINY])
    return out, res


def test_four_trial_search_writes_its_table_plot_and_keeps_a_loadable_best_model(search: Any, avmnist: Any) -> None:
    out = search.best_dir.parent
    assert search.metric == "valid/digit/acc" and search.direction == "maximize"
    rows = _rows(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"] and {r["state"] for r in rows} == {"COMPLETE"}
    assert all(float(r["seconds"]) > 0 for r in rows)
    values = [float(r["value"]) for r in rows]
    assert search.best_value == pytest.approx(max(values))
    assert int(rows[values.index(max(values))]["trial"]) == search.best_trial  # the first of equals wins
    text = (out / "trials.md").read_text()
    assert f"| {search.best_trial} | COMPLETE (best) |" in text and "## Parameter importances" in text
    png = (out / "search.png").read_bytes()
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    # OUT/best is the best trial's own run: its config holds the sampled values, its metrics the score
    best = search.best_dir
    assert best == out / "best" and (best / "COMPLETE").is_file()
    config = polyfuse.Config.from_yaml(best / "config.yaml")
    assert config.model.dim == search.best_params["model.dim"]
    assert config.model.fusion.name == search.best_params["model.fusion.name"]
    assert config.train.lr == pytest.approx(search.best_params["train.lr"])
    assert json.loads((best / "metrics.json").read_text())["best_score"] == pytest.approx(search.best_value)
    assert json.loads((out / "best.json").read_text())["trial"] == search.best_trial
    assert not any((out / "trials").iterdir())  # the other trials' directories are gone by default
    model = Predictor.load(best)
    preds = model.predict(pd.read_csv(avmnist.test).head(8), root=avmnist.root)
    assert len(preds) == 8 and set(preds["digit"]) <= set(model.classes("digit"))
    res = runner.invoke(app, ["eval", str(best), "--json"])
    assert res.exit_code == 0, res.output


def test_threshold_pruner_prunes_every_trial_after_its_first_epoch(pruned: tuple[Path, Any]) -> None:
    out, res = pruned
    assert res.exit_code == 1 and "no trial completed" in res.output and "2 pruned" in res.output
    rows = _rows(out)
    assert [r["state"] for r in rows] == ["PRUNED", "PRUNED"]
    assert all(r["note"].startswith("pruned at epoch 0: valid/digit/acc") for r in rows)
    assert not (out / "best").exists() and not any((out / "trials").iterdir())
    assert "trial 0  pruned" in res.output  # one progress line per finished trial


def test_same_seed_draws_the_same_first_trials(search: Any, pruned: tuple[Path, Any]) -> None:
    out, _ = pruned
    first = [_params(r) for r in _rows(search.best_dir.parent)[:2]]
    assert [_params(r) for r in _rows(out)] == first  # same seed, other pruner, other process: same draws
    space = load_space(SPACE)

    def draws(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed), direction="maximize")
        return [space.suggest(study.ask()) for _ in range(2)]

    assert draws(0) == draws(0) and draws(0) != draws(1)


def test_a_second_invocation_adds_trials_to_the_same_study(pruned: tuple[Path, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(pruned[0], out)  # the study.db of two pruned trials
    res = runner.invoke(app, ["tune", "tiny-avmnist", "--space", str(_space_file(tmp_path)), "--trials", "1",
                              "--pruner", "none", "--out", str(out), "--storage", f"sqlite:///{out / 'study.db'}",
                              "--study-name", "out", *TINY])
    assert res.exit_code == 0, res.output
    rows = _rows(out)
    assert [(r["trial"], r["state"]) for r in rows] == [("0", "PRUNED"), ("1", "PRUNED"), ("2", "COMPLETE")]
    assert _params(rows[2]) not in {_params(rows[0]), _params(rows[1])}  # the later worker does not redraw
    assert json.loads((out / "best.json").read_text())["trial"] == 2 and (out / "best" / "COMPLETE").is_file()
    other = runner.invoke(app, ["tune", "tiny-avmnist", "--space", str(_space_file(tmp_path)), "--trials", "1",
                                "--out", str(out), "--study-name", "another"])
    assert other.exit_code == 2 and "holds the trials of study 'out'" in other.output


def test_time_limit_stops_new_trials_and_bounds_the_running_one(tmp_path: Path, one_thread: None) -> None:
    # 500 epochs would take minutes: the limit cuts the first trial, and no second one starts
    result = polyfuse.tune("tiny-avmnist", SPACE, out=tmp_path / "t", time_limit=3.0, pruner="none",
                           overrides=["train.threads=1", "train.epochs=500"])
    assert [r["state"] for r in result.trials] == ["COMPLETE"]
    assert polyfuse.Config.from_yaml(result.best_dir / "config.yaml").train.max_seconds <= 3.0
    assert 1 <= len(json.loads((result.best_dir / "history.json").read_text())) < 500


def test_cli_tunes_a_user_table_through_the_train_preset(tmp_path: Path, avmnist: Any, one_thread: None) -> None:
    rows = pd.read_csv(avmnist.train).head(120)
    for column in ("audio", "image"):
        rows[column] = [str(avmnist.root / p) for p in rows[column]]
    table = tmp_path / "mine.csv"
    rows.drop(columns=["id"]).to_csv(table, index=False)
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n")
    out = tmp_path / "o"
    res = runner.invoke(app, ["tune", "--data", str(table), "--label", "label", "--metric", "macro_f1", "--space", str(space),
                              "--trials", "1", "--pruner", "none", "--out", str(out), "data.allow_outside_root=true",
                              "train.epochs=1", "train.eval_every_n_epochs=1", "train.min_steps=0", "model.dim=8",
                              "train.threads=1"])
    assert res.exit_code == 0, res.output
    assert "trial 0  complete  valid/label/" in res.output
    config = polyfuse.Config.from_yaml(out / "best" / "config.yaml")
    assert config.data.inputs["image"].kind == "image" and config.data.split.valid > 0  # the preset's plan, one split
    preds = Predictor.load(out / "best").predict(pd.read_csv(avmnist.test).head(5), root=avmnist.root)
    assert preds["label"].notna().all()


@pytest.mark.parametrize(
    "space, message",
    [
        ({"model.fusion.dropuot": {"low": 0.0, "high": 0.5}}, "model.fusion.dropuot: unknown parameter of fusion"),
        ({"trian.lr": {"low": 1e-3, "high": 1e-2}}, "trian: unknown key"),
        ({"model.fusion.name": ["concat", "low_rank_tensor"], "model.fusion.dropout": {"low": 0.0, "high": 0.5}},
         "model.fusion.name=low_rank_tensor, model.fusion.dropout=0): model.fusion.dropout: unknown parameter"),
        ({"train.epochs": {"choices": ["many"]}}, "train.epochs: expected an integer"),
    ],
)
def test_a_space_the_config_rejects_fails_before_any_trial_naming_the_key(space: dict, message: str, tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    res = runner.invoke(app, ["tune", "tiny-avmnist", "--space", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "o" / "trials").exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"train.lr": {"low": 0.1, "high": 0.01}}, "train.lr: low (0.1) must be below high (0.01)"),
        ({"train.lr": {"low": 0.0, "high": 0.1, "log": True}}, "train.lr: log: true needs low > 0"),
        ({"train.lr": {"low": 0.001}}, "train.lr: a range needs both low and high"),
        ({"train.epochs": {"low": 1, "high": 4.5, "int": True}}, "train.epochs: high must be an integer"),
        ({"model.dim": {"choices": []}}, "model.dim: choices must be a non-empty list"),
        ({"model.dim": {"choices": [8, 16], "low": 1}}, "model.dim: 'low' does not go with choices"),
        ({"model.dim": {"options": [8]}}, "model.dim: unknown option 'options'"),
        ({"data.use": {"choices": [["audio"], ["image"]]}}, "data.use: choice ['audio'] is not a string"),
        ({"model..dim": [8]}, "model..dim: not a dotted config key"),
        ({}, "empty"),
    ],
)
def test_malformed_space_entries_are_errors_naming_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_space(entry)
    assert message in str(caught.value)


def test_metric_names_resolve_against_the_first_task() -> None:
    config = with_dataset_tasks(load_recipe("tiny-avmnist"))
    assert resolve_metric(config, None) == "valid/digit/acc"
    assert resolve_metric(config, "f1") == "valid/digit/f1"
    assert resolve_metric(config, "loss") == "valid/loss"
    with pytest.raises(ConfigError, match="'mae' is not a metric of task digit"):
        resolve_metric(config, "mae")
    with pytest.raises(ConfigError, match="validation metric"):
        resolve_metric(config, "train/loss")


def test_a_missing_space_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--space .*nope.yaml: no such file"):
        load_space(tmp_path / "nope.yaml")
