"""Ensembles: greedy weights on held-out predictions, one model directory every tool loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import polyfuse
from polyfuse.checkpoint import load_model_dir
from polyfuse.config import Config
from polyfuse.errors import PolyfuseError
from polyfuse.train.ensemble import close_to_best, greedy_weights, member_predictions, merged_pipeline, metric_function, save_ensemble
from test_presets import avmnist_table


def _accuracy(preds: np.ndarray, labels: np.ndarray) -> float:
    return float((preds.argmax(1) == labels).mean())


def test_greedy_weights_combine_complementary_members_and_drop_a_useless_one() -> None:
    labels = np.array([0, 1] * 20)
    correct = np.eye(2)[labels]
    first_half = np.arange(40) < 20
    # a: sure and right on the first half, slightly wrong on the second; b the other way round
    a = np.where(first_half[:, None], 0.9 * correct + 0.05, 0.6 * (1 - correct) + 0.2)
    b = np.where(first_half[:, None], 0.6 * (1 - correct) + 0.2, 0.9 * correct + 0.05)
    useless = np.full((40, 2), 0.5)
    weights, score = greedy_weights([a, useless, b], labels, _accuracy, "max")
    assert _accuracy(a, labels) == 0.5 and _accuracy(b, labels) == 0.5
    assert score == 1.0 and weights[0] > 0 and weights[2] > 0 and weights[1] == 0
    assert abs(sum(weights) - 1) < 1e-9


def test_greedy_weights_never_lose_to_the_best_member_and_minimize_errors() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    members = [y + rng.normal(scale=s, size=200) for s in (0.3, 0.5, 2.0)]
    rmse = lambda p, t: float(np.sqrt(np.mean((p - t) ** 2)))  # noqa: E731
    weights, score = greedy_weights(members, y, rmse, "min")
    assert score <= min(rmse(m, y) for m in members)
    assert score < rmse(members[0], y)  # two independent noisy members average to less noise
    assert weights[2] < weights[0]


def test_the_pool_leaves_out_members_far_weaker_than_the_best() -> None:
    # watch table, 5-fold OOF: a tabular-only member at accuracy 0.14 next to 0.80 got a third of the weight
    assert close_to_best([0.80, 0.78, 0.14, 0.72], "max") == [True, True, False, True]
    assert close_to_best([0.80, 0.719], "max") == [True, False]
    assert close_to_best([1.20, 1.30, 1.33], "min") == [True, True, False]  # RMSE: within 10% above the best
    assert close_to_best([-2.0, -2.1, -3.0], "max") == [True, True, False]  # negative scores: by magnitude


@pytest.fixture(scope="module")
def selection_run(avmnist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """medium (+ a hidden-layer head candidate) on 240 AV-MNIST rows: the fused model, each input alone, trained briefly."""
    folder = tmp_path_factory.mktemp("ensemble")
    path = avmnist_table(avmnist, folder / "data", 240, extra_id=False)
    preset = folder / "heads.yaml"  # medium, plus the fused model with a hidden-layer head among the candidates
    preset.write_text("base: medium\nselection: {heads: [64]}\n")
    polyfuse.fit(str(path), label="digit", preset=str(preset), out=folder / "run", progress=False,
                 overrides=["train.max_steps=40", "train.min_steps=20", "train.threads=1"])
    return folder


def test_an_ensemble_directory_predicts_the_weighted_mean_of_its_members(selection_run: Path) -> None:
    candidates = selection_run / "run" / "candidates"
    audio, image = load_model_dir(candidates / "audio_rocket_only"), load_model_dir(candidates / "image_only")
    out = selection_run / "ensemble"
    metrics = save_ensemble([("audio_rocket only", 0.7, audio), ("image only", 0.3, image)], out)
    assert metrics["ensemble"] == [{"member": "audio_rocket only", "weight": 0.7}, {"member": "image only", "weight": 0.3}]
    assert {"valid", "test"} <= set(metrics)
    assert polyfuse.load(out).evaluate()["metrics"]["digit"]["acc"] == pytest.approx(metrics["test"]["digit"]["acc"])

    table = str(selection_run / "data" / "table.csv")
    ensemble = polyfuse.load(out)
    got = ensemble.predict(table)
    columns = [c for c in got.columns if c.startswith("digit:p:")]
    expected = 0.7 * polyfuse.load(candidates / "audio_rocket_only").predict(table)[columns].to_numpy() + \
        0.3 * polyfuse.load(candidates / "image_only").predict(table)[columns].to_numpy()
    np.testing.assert_allclose(got[columns].to_numpy(), expected, atol=1e-5)
    assert set(ensemble.inputs) == {"audio_rocket", "image"}
    # a row without one input still gets the other member's opinion, weighted as saved
    assert (got["digit"].astype(str) == pd.read_csv(table)["digit"].astype(str)).mean() > 0.5


def test_building_an_ensemble_extracts_each_batch_once_with_the_same_result(selection_run: Path, tmp_path: Path) -> None:
    from polyfuse.encoders.extraction_memo import DEFAULT_MAX_BYTES, MEMO, remembering_extractions

    candidates = selection_run / "run" / "candidates"
    members = [("audio_rocket only", 0.6, load_model_dir(candidates / "audio_rocket_only")),
               ("image only", 0.4, load_model_dir(candidates / "image_only"))]
    results = {}
    try:
        for capacity in (0, DEFAULT_MAX_BYTES):  # 0: nothing remembered, every batch extracted again
            MEMO.max_bytes = capacity
            with remembering_extractions():
                results[capacity] = save_ensemble(members, tmp_path / str(capacity))
                hits = MEMO.hits
            assert (hits > 0) == (capacity > 0)  # the contribution passes re-read the same batches
    finally:
        MEMO.max_bytes = DEFAULT_MAX_BYTES
    for key in ("valid", "test", "contribution"):
        assert results[0][key] == results[DEFAULT_MAX_BYTES][key]


def test_an_ensemble_exports_to_onnx_with_parity(selection_run: Path) -> None:
    pytest.importorskip("onnxruntime")
    from polyfuse.deploy.export import export_checkpoint

    out = selection_run / "ensemble"
    if not (out / "COMPLETE").is_file():
        candidates = selection_run / "run" / "candidates"
        save_ensemble([("audio_rocket only", 0.5, load_model_dir(candidates / "audio_rocket_only")),
                       ("image only", 0.5, load_model_dir(candidates / "image_only"))], out)
    exported = export_checkpoint(out, selection_run / "onnx")
    assert exported.summary()["max_abs_diff"] < 1e-3 and exported.summary()["rows_checked"] > 0


def test_members_with_different_heads_keep_their_own(selection_run: Path) -> None:
    candidates = selection_run / "run" / "candidates"
    linear, hidden = load_model_dir(candidates / "late"), load_model_dir(candidates / "late_head64")
    assert linear.config.tasks["digit"].head.get("hidden", 0) == 0 and hidden.config.tasks["digit"].head["hidden"] == 64
    out = selection_run / "heads"
    save_ensemble([("late", 0.5, linear), ("late head64", 0.5, hidden)], out)
    table = str(selection_run / "data" / "table.csv")
    got = polyfuse.load(out).predict(table)
    columns = [c for c in got.columns if c.startswith("digit:p:")]
    expected = 0.5 * polyfuse.load(candidates / "late").predict(table)[columns].to_numpy() + \
        0.5 * polyfuse.load(candidates / "late_head64").predict(table)[columns].to_numpy()
    np.testing.assert_allclose(got[columns].to_numpy(), expected, atol=1e-5)


def test_member_predictions_are_aligned_by_row_and_pipelines_must_agree(selection_run: Path) -> None:
    candidates = selection_run / "run" / "candidates"
    late = member_predictions(candidates / "late", "valid", "digit")
    audio = member_predictions(candidates / "audio_rocket_only", "valid", "digit")
    assert np.array_equal(late.rows, audio.rows) and np.array_equal(late.labels, audio.labels)
    assert late.preds.shape == (len(late.rows), 10)
    assert metric_function("classification", "acc")(late.preds, late.labels) == pytest.approx(
        json.loads((candidates / "late" / "metrics.json").read_text())["valid"]["digit"]["acc"], abs=1e-6)
    a, b = load_model_dir(candidates / "late"), load_model_dir(candidates / "audio_rocket_only")
    assert set(merged_pipeline([b, a]).processors) == {"audio_rocket", "audio_summary", "image"}
    b.pipeline.processors["audio_rocket"].load_state_dict({**b.pipeline.processors["audio_rocket"].state_dict(), "mean": [123.0]})
    with pytest.raises(PolyfuseError, match="fitted differently"):
        merged_pipeline([a, b])


def test_the_ensemble_config_validates_its_members(selection_run: Path) -> None:
    from polyfuse.build import validate_config
    from polyfuse.config import Config, ConfigError

    out = selection_run / "ensemble"
    if not (out / "COMPLETE").is_file():
        pytest.skip("needs the ensemble of the previous test")
    config = Config.from_yaml(out / "config.yaml")
    assert [m.name for m in config.model.ensemble] == ["audio_rocket only", "image only"]
    bad = config.to_dict()
    bad["model"]["ensemble"][1]["fusion"] = {"name": "concatt"}
    with pytest.raises(ConfigError, match=r"model\.ensemble\[1\]\.fusion\.name.*did you mean 'concat'"):
        validate_config(Config.from_dict(bad))
    assert torch.isclose(load_model_dir(out).model.weights.sum(), torch.tensor(1.0))


def test_a_table_with_one_input_can_average_the_model_over_seeds(avmnist, tmp_path: Path) -> None:
    path = avmnist_table(avmnist, tmp_path / "data", 200, extra_id=False)
    frame = pd.read_csv(path)[["image", "digit"]]
    frame.to_csv(path, index=False)
    preset = tmp_path / "seeds.yaml"  # medium with the opt-in seed averaging
    preset.write_text("base: medium\nselection: {fusions: [], unimodal: true, max_rows: 5000, ensemble: 4, seeds: 3}\n")
    run = polyfuse.fit(str(path), label="digit", preset=str(preset), out=tmp_path / "run", progress=False,
                       overrides=["train.max_steps=30", "train.min_steps=10", "train.threads=1"])
    selection = run.metrics["selection"]
    assert [c["candidate"] for c in selection["candidates"]] == ["late", "late seed 1", "late seed 2"]
    seeds = {Config.from_yaml(tmp_path / "run" / "candidates" / f"late_seed_{k}" / "config.yaml").train.seed for k in (1, 2)}
    assert seeds == {1, 2}
    report = (tmp_path / "run" / "report.md").read_text()
    assert "the model from 3 seeds" in report
    assert len(polyfuse.load(tmp_path / "run").predict(str(path))) == 200


def test_log_loss_weights_mix_members_that_tie_on_accuracy_and_the_reported_score_is_the_metric() -> None:
    """Two members right on the same rows (accuracy ties, so accuracy weights keep one) but confident
    on different rows: log-loss weights average them, and the held-out score given is accuracy."""
    from polyfuse.train.table_fit import Candidate, _fit_ensemble
    from polyfuse.train.ensemble import MemberPredictions

    labels = np.array([0, 1, 0, 1, 0, 1])
    sure_early = np.array([[0.99, 0.01], [0.01, 0.99], [0.99, 0.01], [0.45, 0.55], [0.55, 0.45], [0.45, 0.55]])
    sure_late = np.array([[0.55, 0.45], [0.45, 0.55], [0.55, 0.45], [0.01, 0.99], [0.99, 0.01], [0.01, 0.99]])
    config = Config.from_dict({"data": {"inputs": {"x": {"kind": "tabular", "columns": ["x"]}}},
                               "tasks": {"y": {"type": "classification", "column": "y"}},
                               "train": {"monitor": "valid/y/acc"}})
    held = [MemberPredictions(Path(k), np.arange(6), p, labels, ["0", "1"]) for k, p in (("a", sure_early), ("b", sure_late))]
    cands = [Candidate("a", []), Candidate("b", [])]
    single = _fit_ensemble(cands, held, config, print, "metric")  # accuracy cannot tell them apart: the first alone
    assert single is not None and [(c.key, w) for c, w in single.members] == [("a", 1.0)]
    mixed = _fit_ensemble(cands, held, config, print, "log_loss")
    assert mixed is not None and [c.key for c, _ in mixed.members] == ["a", "b"]
    assert mixed.members[0][1] == pytest.approx(0.5, abs=0.05) and mixed.score == pytest.approx(1.0)


def test_a_wrong_ensemble_fit_is_refused_before_any_data_is_read(tmp_path: Path) -> None:
    from polyfuse.config import ConfigError
    from polyfuse.presets.table import plan_table

    own = tmp_path / "bad.yaml"
    own.write_text("base: medium\nselection: {ensemble_fit: brier}\n")
    frame = pd.DataFrame({"note": ["a b", "c d"] * 10, "y": ["p", "q"] * 10})
    with pytest.raises(ConfigError, match="selection.ensemble_fit: 'brier' is not one of log_loss, metric"):
        plan_table(frame, ["y"], preset=str(own))


def test_the_selection_replay_reproduces_the_selection_it_replays(selection_run: Path) -> None:
    """benchmarks/selection_replay.py: its rule for medium's own choice gives the test score the run has."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from selection_replay import load_candidates, replay

    run = selection_run / "run"
    cands, task, kind, metric = load_candidates(run)
    assert {c.key for c in cands} >= {"late", "audio_rocket_only", "image_only"} and metric == "acc"
    rules = replay(cands, kind, metric)
    saved = json.loads((run / "metrics.json").read_text())
    # medium fits the ensemble weights to the held-out log-loss
    assert rules["ensemble on log-loss (pool: metric)"]["test"] == pytest.approx(saved["test"][task]["acc"], abs=1e-6)
    assert rules["metric"]["pick"] == max(cands, key=lambda c: c.valid_score).key  # the first of the best on validation
