"""Captioning and VQA on real easy-VQA rows: tiny runs, generated text, reloading, recipes."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.build import validate_config
from polyfuse.checkpoint import save_model_dir
from polyfuse.cli import app
from polyfuse.recipes import load_recipe
from polyfuse.registry import DATASETS

RECIPES = ["easy-vqa", "easy-vqa-question", "easy-vqa-image", "easy-vqa-caption", "easy-vqa-generate",
           "tiny-easy-vqa", "tiny-caption"]


@pytest.fixture(scope="module")
def captions():
    import polyfuse.data  # noqa: F401

    return DATASETS.get("easy-vqa-captions").factory()


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "caption"
    result = polyfuse.fit("tiny-caption", out=out)
    return out, result


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_are_valid(name):
    config = load_recipe(name)
    validate_config(config)
    if name in ("easy-vqa-question", "easy-vqa-image"):
        assert config.data.use == [name.rsplit("-", 1)[1]]


def test_tiny_captioning_learns_and_reports(caption_run):
    out, result = caption_run
    history = json.loads((out / "history.json").read_text())
    losses = [row["train/loss"] for row in history]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]  # teacher-forcing loss goes down
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["caption"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "exact"}
    assert metrics["monitor"] == "valid/caption/bleu4"
    assert metrics["test"]["caption"]["bleu1"] > 0.4  # far from perfect after 80 steps, but caption-like
    report = (out / "report.md").read_text()
    assert "| test | caption | bleu4 |" in report and "| test | caption | exact |" in report
    assert "## Generated text: caption" in report and "| a " in report  # target vs generated rows
    pipeline = json.loads((out / "pipeline" / "pipeline.json").read_text())
    vocabulary = pipeline["tasks"]["caption"]["classes"]
    assert vocabulary[:4] == ["<pad>", "<unk>", "<s>", "</s>"] and "circle" in vocabulary


def test_predict_returns_generated_text_and_reloads_identically(caption_run, captions, tmp_path):
    out, result = caption_run
    model = polyfuse.load(out)
    rows = pd.read_csv(captions.test).head(6)
    preds = model.predict(rows, root=captions.root)
    assert list(preds.columns) == ["caption", "problems"]
    texts = preds["caption"].tolist()
    assert all(isinstance(t, str) and t for t in texts)
    assert sum(t.startswith("a ") and len(t.split()) == 3 for t in texts) >= 4  # shaped like "a red circle"
    vocabulary = set(model.classes("caption"))
    assert all(set(t.split()) <= vocabulary for t in texts)
    # the reloaded model generates exactly what the trained one did: same test metrics ...
    evaluation = model.evaluate()
    assert evaluation["metrics"]["caption"] == pytest.approx(result.metrics["test"]["caption"], abs=1e-6)
    # ... and a checkpoint written from the reloaded model generates the same text again
    save_model_dir(tmp_path / "again", model.model, model.config, model.specs, model.task_dims, model.pipeline)
    again = polyfuse.load(tmp_path / "again").predict(rows, root=captions.root)
    assert again["caption"].tolist() == texts
    # a wider beam is a setting of the head, not of the weights
    model.model.heads["caption"].beam_size = 4
    assert all(isinstance(t, str) and t for t in model.predict(rows, root=captions.root)["caption"])


def test_cli_predict_writes_text(caption_run, captions, tmp_path):
    out, _ = caption_run
    manifest = tmp_path / "rows.csv"
    rows = pd.read_csv(captions.test).head(3)  # image paths relative to the dataset's folder
    rows.drop(columns=["caption"]).to_csv(manifest, index=False)
    written = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", str(out), "--data", str(manifest), "--out", str(written),
                                      "--root", str(captions.root)])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output  # every image was read: the captions come from them
    frame = pd.read_csv(written, keep_default_na=False)
    assert len(frame) == 3 and frame["caption"].str.len().min() > 0 and (frame["problems"] == "").all()


def test_tiny_vqa_classification_and_generation(tmp_path):
    classified = polyfuse.fit("tiny-easy-vqa", out=tmp_path / "cls")
    assert set(classified.metrics["test"]["answer"]) >= {"acc", "f1"}
    assert set(classified.metrics["contribution"]["without"]) == {"image", "question"}
    generated = polyfuse.fit(
        "easy-vqa-generate", out=tmp_path / "gen",
        overrides=["data.max_rows=64", "data.batch_size=16", "model.dim=16", "train.epochs=1", "train.threads=1",
                   "train.progress=false", "tasks.answer.head.heads=2"],
    )
    assert generated.metrics["monitor"] == "valid/answer/exact"
    assert set(generated.metrics["test"]["answer"]) >= {"exact", "bleu1"}
    answers = polyfuse.load(tmp_path / "gen").predict(
        pd.read_csv(DATASETS.get("easy-vqa").factory().test).head(4), root=DATASETS.get("easy-vqa").factory().root
    )["answer"]
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
