"""Own-table defaults: presets applied to real tables, schedules in steps, CV for tiny tables, selection.

Tables are small real subsets: AV-MNIST (MFCC sequences as .npy + digit images) and the
clothing reviews (text + tabular, binary and imbalanced).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.config import ConfigError
from polyfuse.presets import load_preset, preset_names
from polyfuse.presets.table import plan_table
from polyfuse.train.table_fit import _candidates

runner = CliRunner()


def avmnist_table(avmnist, folder: Path, n: int, extra_id: bool = True) -> Path:
    """The first ``n`` AV-MNIST training rows, files copied next to a CSV (plus an id and a constant column)."""
    frame = pd.read_csv(avmnist.train).head(n)
    root = Path(avmnist.root)
    for column in ("audio", "image"):
        for rel in frame[column]:
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / rel, folder / rel)
    frame = frame.rename(columns={"label": "digit"})
    if extra_id:
        frame["row_id"] = [f"r{i:04d}" for i in range(len(frame))]
        frame["source"] = "fsdd"
    path = folder / "table.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clothing_rows() -> pd.DataFrame:
    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    prepared = DATASETS.get("clothing-reviews").factory()
    frame = pd.read_parquet(prepared.train).head(240)
    return frame[["title", "review_text", "age", "department_name", "recommended"]]


# --------------------------------------------------------------------------- presets and plans


def test_every_preset_is_readable_yaml_with_its_sections() -> None:
    assert {"fast", "medium", "best"} <= set(preset_names())
    for name in ("fast", "medium", "best"):
        spec = load_preset(name)
        assert spec["name"] == name
        assert {"encoders", "schedule", "validation", "imbalance"} <= set(spec)
    assert load_preset("best")["selection"]["fusions"]
    fast = load_preset("fast")
    assert all("pretrained" not in rule["encoder"] for rules in fast["encoders"].values() for rule in rules)


def test_unknown_preset_names_the_allowed_ones(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path, 20)
    with pytest.raises(ConfigError, match="fast, medium"):
        plan_table(path, ["digit"], preset="huge")


def test_plan_excludes_id_and_constant_columns_with_a_note(avmnist, tmp_path: Path) -> None:
    plan = plan_table(avmnist_table(avmnist, tmp_path, 60), ["digit"], preset="medium")
    columns = {c for inp in plan.config.data.inputs.values() for c in [inp.options.get("column")] + inp.options.get("numeric", []) + inp.options.get("categorical", [])}
    assert not {"id", "row_id", "source"} & columns
    notes = {c.what: c for c in plan.choices}
    assert notes["column row_id"].choice == "excluded" and notes["column source"].choice == "excluded"
    assert "data.inputs" in notes["column row_id"].why  # says how to include it
    encoders = plan.config.model.encoders  # a series column: random-convolution and summary features, two inputs
    assert encoders["audio_rocket"].name == "sequence_rocket" and encoders["audio_summary"].name == "sequence_summary"
    assert plan.config.model.encoders["image"].name == "image_pixels"  # 28 px: too small for MobileNet


def test_selection_adds_the_fused_model_with_a_hidden_layer_in_its_head(avmnist, tmp_path: Path) -> None:
    preset = tmp_path / "heads.yaml"  # opt-in: a preset file on top of medium
    preset.write_text("base: medium\nselection: {heads: [64]}\n")
    table = avmnist_table(avmnist, tmp_path, 100)
    assert "late head64" not in {c.key for c in _candidates(plan_table(table, ["digit"], preset="medium"))}
    plan = plan_table(table, ["digit"], preset=str(preset))
    candidates = {c.key: c.overrides for c in _candidates(plan)}
    assert candidates["late head64"] == ["tasks.digit.head.hidden=64"]
    assert {"late", "audio_rocket only", "image only"} <= set(candidates)  # the rest of medium's selection stays
    assert plan.config.tasks["digit"].head.get("hidden", 0) == 0  # the default candidate keeps the linear head
    notes = {c.what: c.choice for c in plan.choices}
    assert "64-unit hidden layer" in notes["selection"]


def test_one_input_table_with_head_variants_reports_its_selection(avmnist, tmp_path: Path) -> None:
    from polyfuse.train.table_fit import _candidates

    preset = tmp_path / "heads.yaml"
    preset.write_text("base: medium\nselection: {heads: [32], seeds: 3}\n")
    table = avmnist_table(avmnist, tmp_path, 100, extra_id=False)
    frame = pd.read_csv(table).drop(columns=["audio"])  # the image alone: one input
    frame.to_csv(table, index=False)
    plan = plan_table(table, ["digit"], preset=str(preset))
    assert list(plan.config.data.inputs) == ["image"]
    assert [c.key for c in _candidates(plan)] == ["late", "late head32"]  # head variants, not seeds
    notes = {c.what: c.choice for c in plan.choices}
    assert "32-unit hidden layer" in notes["selection"] and "seeds" not in notes["ensemble"]
    medium = plan_table(table, ["digit"], preset="medium")  # no head variants: nothing to select
    assert "selection" not in {c.what for c in medium.choices} and len(_candidates(medium)) == 1


def test_tiny_table_falls_back_to_cross_validation_and_schedule_is_in_steps(avmnist, tmp_path: Path) -> None:
    plan = plan_table(avmnist_table(avmnist, tmp_path, 100), ["digit"], preset="medium")
    assert plan.cv_folds == 5
    assert plan.config.data.split.valid == 0.0
    train = plan.config.train
    assert train.min_steps == 300 and train.max_steps >= 600
    assert train.epochs * -(-plan.train_rows // plan.config.data.batch_size) >= train.max_steps
    assert plan.config.data.batch_size == 16  # a tiny table gets small batches
    big = plan_table(avmnist_table(avmnist, tmp_path / "big", 400), ["digit"], preset="medium")
    assert big.cv_folds == 0 and big.config.data.split.valid >= 0.1


def test_metric_option_sets_the_monitor_and_refuses_a_wrong_one(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path, 60)
    assert plan_table(path, ["digit"], metric="macro_f1").config.train.monitor == "valid/digit/f1"
    with pytest.raises(ConfigError, match="--metric"):
        plan_table(path, ["digit"], metric="rmse")


def test_imbalanced_binary_label_gets_class_weights_and_a_tuned_threshold(clothing_rows: pd.DataFrame) -> None:
    plan = plan_table(clothing_rows, ["recommended"], preset="fast")
    task = plan.config.tasks["recommended"]
    assert task.class_weights == "balanced" and task.threshold == "tune"
    kinds = {n: c.name for n, c in plan.config.model.encoders.items()}
    assert "text_ngrams" in kinds.values() and "pretrained_text_embedding" not in kinds.values()
    medium = plan_table(clothing_rows, ["recommended"], preset="medium")
    assert "pretrained_text_embedding" in {c.name for c in medium.config.model.encoders.values()}


def test_a_column_named_like_a_module_attribute_is_a_valid_task_name(clothing_rows: pd.DataFrame) -> None:
    frame = clothing_rows.rename(columns={"recommended": "type"})
    plan = plan_table(frame, ["type"], preset="fast")
    assert "type" not in plan.config.tasks and plan.config.tasks["type_label"].column == "type"


# --------------------------------------------------------------------------- end to end


def test_fast_preset_on_a_dataframe_trains_predicts_and_reports(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    run = polyfuse.fit(clothing_rows, label="recommended", preset="fast", out=tmp_path / "run", progress=False,
                       overrides=["train.max_steps=60", "train.min_steps=30", "train.threads=1"])
    metrics = run.metrics
    assert metrics["preset"] == "fast"
    assert "f1" in metrics["test"]["recommended"]  # macro-F1 for every classification task
    assert "recommended" in metrics["thresholds"] and 0 < metrics["thresholds"]["recommended"]["threshold"] < 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Choices" in report and "text_ngrams" in report and "Decision threshold" in report
    preds = run.predict(clothing_rows.head(12).drop(columns=["recommended"]))
    assert isinstance(preds, pd.DataFrame) and len(preds) == 12
    assert set(preds["recommended"]) <= {0, 1}
    # the threshold lives in the weights: the reloaded model's argmax is the tuned decision
    probs = preds[["recommended:p:0", "recommended:p:1"]].to_numpy()
    assert (preds["recommended"].to_numpy() == probs.argmax(1)).all()


@pytest.mark.slow
def test_medium_on_a_tiny_table_cross_validates_then_refits(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path / "data", 80)
    result = runner.invoke(app, ["train", "--data", str(path), "--label", "digit", "--out", str(tmp_path / "run"),
                                 "--no-progress", "train.max_steps=40", "train.min_steps=20", "train.threads=1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    selection = metrics["selection"]
    # 5 folds, fewer when the rarest digit has fewer training rows than that
    assert 2 <= selection["folds"] <= 5 and len(selection["candidates"][0]["scores"]) == selection["folds"]
    assert metrics["test"]["digit"]["acc"] > 0.3  # 10 classes: chance is 0.1
    model = polyfuse.load(tmp_path / "run")
    assert len(model.predict(str(path))) == 80
    assert "cross-validation" in (tmp_path / "run" / "report.md").read_text()
    assert "valid/digit/acc" in _all_output(result)  # --no-progress still prints a line per evaluation


def _all_output(result) -> str:  # noqa: ANN001 - a click Result
    try:
        return result.output + result.stderr
    except ValueError:  # stderr mixed into output
        return result.output


@pytest.mark.slow
def test_best_selects_among_candidates_under_a_time_limit(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path / "data", 240, extra_id=False)
    result = runner.invoke(app, ["train", "--data", str(path), "--label", "digit", "--preset", "best", "--out",
                                 str(tmp_path / "run"), "--no-progress", "--time-limit", "600",
                                 "train.max_steps=40", "train.min_steps=20", "train.threads=1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    names = [c["candidate"] for c in metrics["selection"]["candidates"]]
    assert {"audio_rocket only", "audio_summary only", "image only", "concat", "late", "gated"} <= set(names)
    chosen = [c for c in metrics["selection"]["candidates"] if c["chosen"]][0]
    scored = [c["score"] for c in metrics["selection"]["candidates"] if c["score"] is not None]
    assert chosen["score"] == max(scored)
    assert "## Selection" in (tmp_path / "run" / "report.md").read_text()
    assert polyfuse.load(tmp_path / "run").predict(str(path)).shape[0] == 240


def test_early_stopping_never_ends_a_run_before_min_steps(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path / "data", 200, extra_id=False)
    run = polyfuse.fit(str(path), label="digit", preset="fast", out=tmp_path / "run", progress=False,
                       overrides=["train.min_steps=60", "train.max_steps=200", "train.early_stopping.patience=1",
                                  "train.eval_every_n_epochs=1", "train.lr=0.3", "train.threads=1"])
    assert run.metrics["steps_run"] >= 60


def test_cli_options_for_tables_refuse_a_recipe_and_bad_values(avmnist, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "tiny-avmnist", "--preset", "best"])
    assert result.exit_code == 2 and "--preset applies to --data" in result.output
    path = avmnist_table(avmnist, tmp_path, 30)
    result = runner.invoke(app, ["train", "--data", str(path), "--label", "digit", "--metric", "rmse", "--print-config"])
    assert result.exit_code == 2 and "--metric" in result.output
    result = runner.invoke(app, ["train", "--data", str(path), "--label", "digit", "--preset", "fast", "--print-config"])
    assert result.exit_code == 0 and "sequence_rocket" in result.output and "min_steps" in result.output


def test_modality_dropout_works_without_augment_enabled(avmnist, tmp_path: Path) -> None:
    from polyfuse.data.prepare import prepare_data

    plan = plan_table(avmnist_table(avmnist, tmp_path, 64, extra_id=False), ["digit"], preset="fast")
    config = plan.config.with_overrides(["data.augment.modality_dropout=0.9", "data.split.valid=0.0", "data.split.test=0.0"])
    assert not config.data.augment.enabled
    train = prepare_data(config, progress=False).datasets["train"]
    dropped = sum(v is None for i in range(len(train)) for v in train[i].inputs.values())
    assert dropped > len(train) // 2  # p=0.9: most rows lose one of their two inputs
    assert all(any(v is not None for v in train[i].inputs.values()) for i in range(len(train)))  # never all


def test_a_preset_file_of_ones_own_and_the_selection_row_limit(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("base: medium\nselection: {fusions: [], unimodal: true, linear: false, max_rows: 100}\nschedule: {min_steps: 50}\n")
    plan = plan_table(clothing_rows, ["recommended"], preset=str(own))
    assert plan.preset == "mine" and plan.selection is None  # 240 rows > 100 and no linear candidates: one model
    assert any(c.what == "selection" and "one model" in c.choice for c in plan.choices)
    assert plan.config.train.min_steps == 50
    # with linear candidates, a table over the limit keeps two: the fused model and one convex fit over every input
    own.write_text("base: medium\nselection: {max_rows: 100, linear_above_max_rows: false}\n")  # linear inherited, not above the limit
    assert plan_table(clothing_rows, ["recommended"], preset=str(own)).selection is None
    own.write_text("base: medium\nselection: {max_rows: 100}\n")  # medium's default: linear_above_max_rows true
    plan = plan_table(clothing_rows, ["recommended"], preset=str(own))
    inputs = list(plan.config.data.inputs)
    assert [c.key for c in _candidates(plan)] == ["late", f"{'+'.join(inputs)} linear"]
    assert any(c.what == "selection" and "no wider selection" in c.why for c in plan.choices)
    medium = plan_table(clothing_rows, ["recommended"], preset="medium")
    assert medium.selection == {"fusions": [], "unimodal": True, "linear": "ngrams", "heads": [], "max_rows": 5000,
                               "linear_above_max_rows": True, "ensemble_fit": "log_loss", "ensemble": 4}
