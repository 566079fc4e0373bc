"""``train.solver: convex``: a linear model on n-gram TF-IDF fitted by scikit-learn, saved as a polyfuse model.

Real rows: 240 clothing reviews (text + tabular, binary and imbalanced).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import polyfuse
from polyfuse.config import ConfigError
from polyfuse.data.collate import Collator
from polyfuse.data.prepare import prepare_data
from polyfuse.train.convex import C_GRID
from polyfuse.presets.table import plan_table
from polyfuse.train.table_fit import _candidates

LINEAR = ["data.use=[review_text]", "model.fusion={name: linear}", "train.solver=convex", "train.threads=1"]


@pytest.fixture(scope="module")
def clothing_rows() -> pd.DataFrame:
    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    frame = pd.read_parquet(DATASETS.get("clothing-reviews").factory().train).head(240)
    return frame[["title", "review_text", "age", "department_name", "recommended"]]


@pytest.fixture(scope="module")
def convex_run(clothing_rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("convex") / "run"
    polyfuse.fit(clothing_rows, label="recommended", preset="fast", out=out, progress=False,
                 overrides=[*LINEAR, "tasks.recommended.threshold=none"])
    return out


def test_the_saved_model_is_the_scikit_learn_logistic_regression(convex_run: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    metrics = json.loads((convex_run / "metrics.json").read_text())
    fit = metrics["convex"]
    assert metrics["steps_run"] == 0 and fit["estimator"] == "LogisticRegression" and fit["C"] in C_GRID
    # every strength scored by cross-validation, with and without the class weights
    assert set(fit["scores"]) == {f"C={c:g}{w}" for c in C_GRID for w in ("", ", class-weighted")}
    loaded = polyfuse.load(convex_run)
    prepared = prepare_data(loaded.config, pipeline=loaded.pipeline, progress=False)
    vectorizer = loaded.pipeline.processors["review_text"].ngrams
    train, test = prepared.datasets["train"].frame, prepared.datasets["test"].frame

    def design(frame: pd.DataFrame) -> sparse.csr_matrix:  # the vectorizer itself, not the solver's own path
        rows = [vectorizer.transform(str(text)) for text in frame["review_text"].fillna("")]
        indptr = np.cumsum([0] + [len(ids) for ids, _ in rows])
        return sparse.csr_matrix((np.concatenate([w for _, w in rows]).astype(np.float64),
                                  np.concatenate([ids for ids, _ in rows]), indptr), shape=(len(frame), vectorizer.dim))

    weights = dict(enumerate(metrics["class_weights"]["recommended"])) if fit["class_weighted"] else None
    reference = LogisticRegression(C=fit["C"], class_weight=weights, max_iter=2000, random_state=0)
    reference.fit(design(train), train["recommended"].astype(int).to_numpy())
    expected = reference.predict_proba(design(test))[:, 1]
    got = loaded.predict(test.drop(columns=["recommended"]))["recommended:p:1"].to_numpy()
    assert np.abs(got - expected).max() < 2e-3  # the same fit, to L-BFGS's stopping tolerance
    assert metrics["test"]["recommended"]["acc"] == pytest.approx(((expected > 0.5) == test["recommended"]).mean(), abs=1e-6)


def test_a_convex_run_reports_its_choice_and_exports(convex_run: Path, tmp_path: Path) -> None:
    report = (convex_run / "report.md").read_text()
    assert "convex" in report and "LogisticRegression" in report
    from polyfuse.deploy.export import export_checkpoint

    export_checkpoint(convex_run, tmp_path / "onnx")  # checks ONNX Runtime against PyTorch on real rows


def test_a_model_that_is_not_linear_is_refused_with_the_reason(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    for extra, words in ((["model.fusion={name: concat}"], "model.fusion.name=linear"),
                         (["tasks.recommended.head.hidden=16"], "head.hidden must be 0"),
                         (["data.use=[review_text, tabular]"], "TabularMLPEncoder")):
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            polyfuse.fit(clothing_rows, label="recommended", preset="fast", out=tmp_path / "bad", progress=False,
                         overrides=[*LINEAR, *extra], overwrite=True)


def test_regression_is_fitted_by_ridge_in_the_targets_units(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    frame = clothing_rows.drop(columns=["recommended"])
    run = polyfuse.fit(frame, label="age", preset="fast", out=tmp_path / "run", progress=False, overrides=LINEAR)
    assert run.metrics["convex"]["estimator"] == "Ridge"
    preds = run.predict(frame.head(20).drop(columns=["age"]))["age"].to_numpy()
    assert abs(preds.mean() - frame["age"].mean()) < 10  # years, not standardized units


def test_fast_has_no_selection(clothing_rows: pd.DataFrame) -> None:
    fast = plan_table(clothing_rows, ["recommended"], preset="fast")
    assert [c.key for c in _candidates(fast)] == ["late"]  # fast: one model


def test_a_convex_winner_is_refit_on_its_training_and_validation_rows(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    from polyfuse.data.prepare import split_rows
    from polyfuse.train.table_fit import _refit_convex

    table = tmp_path / "table.csv"
    clothing_rows.to_csv(table, index=False)
    plan = plan_table(table, ["recommended"], preset="medium")
    config = plan.config.with_overrides(["train.threads=1"])
    winner = next(c for c in _candidates(plan) if c.key.endswith(" linear") and "+" not in c.key)
    rows = split_rows(config)
    messages: list[str] = []
    assert _refit_convex(winner, config, tmp_path / "out", False, messages.append) is None  # tuned threshold
    assert "threshold" in messages[-1]
    config = config.with_overrides(["tasks.recommended.threshold=none"])
    run = _refit_convex(winner, config, tmp_path / "out", False, messages.append)
    assert run is not None and winner.refit_rows == len(rows["train"]) + len(rows["valid"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["convex"]["rows"] == winner.refit_rows and "valid" not in metrics
    assert (run / "COMPLETE").is_file() and not (run / "checkpoints").exists()  # a finished candidate keeps its model only
    refit_rows = split_rows(polyfuse.load(run).config)
    assert refit_rows["test"].reset_index(drop=True).equals(rows["test"].reset_index(drop=True))  # the same test rows
    assert len(refit_rows["train"]) == winner.refit_rows


def test_convex_with_a_selection_is_refused_before_training(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    from polyfuse.errors import PolyfuseError

    with pytest.raises(PolyfuseError, match="not a selection of candidates"):
        polyfuse.fit(clothing_rows, label="recommended", preset="medium", out=tmp_path / "run", progress=False,
                     overrides=["train.solver=convex"])
    assert not (tmp_path / "run" / "candidates").exists()


def test_a_tabular_input_is_the_logistic_regression_on_its_numbers_and_one_hot_categories(
    clothing_rows: pd.DataFrame, tmp_path: Path,
) -> None:
    """``tabular_linear`` under the convex fit: standardized age + one-hot department, scaled as one
    block of unit-norm rows (1/sqrt(width)), then scikit-learn's logistic regression."""
    from sklearn.linear_model import LogisticRegression

    from polyfuse.data.processors.tabular import category_key

    overrides = ["data.use=[tabular]", "model.encoders.tabular={name: tabular_linear}", *LINEAR[1:],
                 "tasks.recommended.threshold=none"]
    run = polyfuse.fit(clothing_rows, label="recommended", preset="fast", out=tmp_path / "run", progress=False,
                       overrides=overrides)
    fit = run.metrics["convex"]
    loaded = polyfuse.load(run.path)
    proc = loaded.pipeline.processors["tabular"]
    assert proc.numeric == ["age"] and proc.categorical == ["department_name"] and not proc.indicators
    prepared = prepare_data(loaded.config, pipeline=loaded.pipeline, progress=False)
    train, test = prepared.datasets["train"].frame, prepared.datasets["test"].frame
    vocab = proc.vocab["department_name"]
    width = 1 + len(vocab) + 1  # age, then one column per id (0: unknown)
    assert fit["features"] == width

    def design(frame: pd.DataFrame) -> np.ndarray:
        age = ((frame["age"].to_numpy(float) - proc.mean["age"]) / proc.std["age"])[:, None]
        ids = [vocab.index(category_key(v)) + 1 if category_key(v) in vocab else 0 for v in frame["department_name"]]
        return np.hstack([age, np.eye(len(vocab) + 1)[ids]]) / np.sqrt(width)

    weights = dict(enumerate(run.metrics["class_weights"]["recommended"])) if fit["class_weighted"] else None
    reference = LogisticRegression(C=fit["C"], class_weight=weights, max_iter=2000, random_state=0)
    reference.fit(design(train), train["recommended"].astype(int).to_numpy())
    expected = reference.predict_proba(design(test))[:, 1]
    got = loaded.predict(test.drop(columns=["recommended"]))["recommended:p:1"].to_numpy()
    assert np.abs(got - expected).max() < 2e-3


def test_medium_selection_has_each_ngram_input_as_a_linear_candidate(clothing_rows: pd.DataFrame) -> None:
    plan = plan_table(clothing_rows, ["recommended"], preset="medium")
    linear = {c.key: c.overrides for c in _candidates(plan) if c.key.endswith(" linear")}
    ngrams = [n for n in plan.config.data.inputs if plan.config.model.encoders[n].name == "text_ngrams"]
    assert len(ngrams) == 2  # title and review text
    assert set(linear) == {f"{ngrams[0]} linear", f"{ngrams[1]} linear", f"{'+'.join(ngrams)} linear"}
    assert all("train.solver=convex" in o and "model.fusion={name: linear}" in o for o in linear.values())


def test_linear_inputs_makes_every_fixed_feature_input_a_linear_candidate(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    """n-grams, cached MiniLM embeddings and the tabular input (through tabular_linear), each alone and all together."""
    own = tmp_path / "inputs.yaml"
    own.write_text("base: medium\nselection: {linear: inputs}\n")
    plan = plan_table(clothing_rows, ["recommended"], preset=str(own))
    inputs = list(plan.config.data.inputs)
    assert {plan.config.model.encoders[n].name for n in inputs} == {"text_ngrams", "pretrained_text_embedding", "tabular_mlp"}
    linear = {c.key: c.overrides for c in _candidates(plan) if c.key.endswith(" linear")}
    assert set(linear) == {f"{n} linear" for n in inputs} | {f"{'+'.join(inputs)} linear"}
    everything = linear[f"{'+'.join(inputs)} linear"]
    assert "model.encoders.tabular={name: tabular_linear}" in everything and "train.solver=convex" in everything
    assert not any("tabular_linear" in o for o in linear[f"{inputs[0]} linear"])


def test_series_features_are_fitted_as_one_unit_norm_block(tmp_path: Path) -> None:
    """sequence_summary on AV-MNIST's MFCC frames (real spoken digits): the saved model is the logistic
    regression on the standardized features divided by sqrt(width), its coefficients scaled back."""
    from sklearn.linear_model import LogisticRegression

    from data_fixtures import avmnist_rows

    train, valid, root = avmnist_rows(160, 80)
    frame = pd.concat([train, valid], ignore_index=True)[["audio", "label"]]
    overrides = ["data.use=[audio]", "model.encoders.audio={name: sequence_summary}", *LINEAR[1:], f"data.root={root}"]
    run = polyfuse.fit(frame, label="label", preset="fast", out=tmp_path / "run", progress=False, overrides=overrides)
    fit = run.metrics["convex"]
    loaded = polyfuse.load(run.path)
    encoder = loaded.model.encoders["audio"]
    assert fit["features"] == encoder.feature_dim == 13 * 12

    prepared = prepare_data(loaded.config, pipeline=loaded.pipeline, progress=False)
    collate = Collator(loaded.pipeline)

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        dataset = prepared.datasets[split]
        batch = collate([dataset[i] for i in range(len(dataset))])
        with torch.no_grad():
            raw = encoder.extract(dict(batch["inputs"]["audio"]))  # [N, 156]: the extractor, not the solver's path
        scaled = ((raw - encoder.feature_mean) / encoder.feature_std).clamp(-20, 20).numpy()
        return scaled / np.sqrt(encoder.feature_dim), batch["labels"]["label"].numpy()

    x_train, y_train = features("train")
    x_test, _ = features("test")
    weights = dict(enumerate(run.metrics["class_weights"]["label"])) if fit["class_weighted"] else None
    reference = LogisticRegression(C=fit["C"], class_weight=weights, max_iter=2000, random_state=0).fit(x_train, y_train)
    expected = reference.predict_proba(x_test)  # [N, 10]
    preds = loaded.predict(prepared.datasets["test"].frame.drop(columns=["label"]), root=root)
    got = preds[[f"label:p:{c}" for c in loaded.classes("label")]].to_numpy()
    # the same fit to L-BFGS's tolerance (a weak penalty leaves it a flat optimum; float32 features);
    # a scale left out of the written map would move these by far more
    assert np.abs(got - expected).max() < 1e-2 and (got.argmax(1) == expected.argmax(1)).all()


def test_a_text_column_read_by_two_linear_inputs_reports_an_empty_cell_once(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    """The title as TF-IDF and as frozen MiniLM embeddings in one convex fit; an empty title is one problem, not two."""
    table = tmp_path / "table.csv"
    clothing_rows.to_csv(table, index=False)
    plan = plan_table(table, ["recommended"], preset="medium")
    titles = [n for n in plan.config.data.inputs if n.startswith("title_")]
    assert sorted(plan.config.model.encoders[n].name for n in titles) == ["pretrained_text_embedding", "text_ngrams"]
    from polyfuse.train.runner import run_training

    run = run_training(plan.config.with_overrides([f"data.use=[{', '.join(titles)}]", *LINEAR[1:], "tasks.recommended.threshold=none"]),
                       tmp_path / "run", progress=False)
    assert run.metrics["convex"]["features"] > 384  # n-grams and the 384 embedding dimensions side by side
    rows = clothing_rows.drop(columns=["recommended"]).head(40)
    empty = rows["title"].fillna("").astype(str).str.strip() == ""
    assert empty.any()
    preds = polyfuse.load(run.path).predict(rows)
    assert (preds.loc[empty.to_numpy(), "problems"].str.count("title: ") == 1).all()


def test_a_wrong_linear_mode_is_refused_before_any_data_is_read(clothing_rows: pd.DataFrame, tmp_path: Path) -> None:
    own = tmp_path / "bad.yaml"
    own.write_text("base: medium\nselection: {linear: everything}\n")
    with pytest.raises(ConfigError, match="selection.linear: 'everything' is not one of false, true, ngrams, inputs, together"):
        plan_table(clothing_rows, ["recommended"], preset=str(own))


def test_large_tables_choose_the_l2_strength_on_three_folds_every_row_scored_once() -> None:
    from polyfuse.train.convex import LARGE_ROWS, _folds, fold_count

    assert fold_count(LARGE_ROWS) == 5 and fold_count(LARGE_ROWS + 1) == 3
    for kind, target in (("logistic", np.arange(LARGE_ROWS + 300) % 3), ("ridge", np.linspace(0.0, 1.0, LARGE_ROWS + 300))):
        folds = _folds(target, kind, seed=0)
        assert len(folds) == 3
        scored = np.sort(np.concatenate([valid for _, valid in folds]))
        assert np.array_equal(scored, np.arange(len(target)))
    assert len(_folds(np.arange(200) % 2, "logistic", seed=0)) == 5


def test_over_the_row_limit_medium_trains_the_fused_model_and_one_convex_fit_and_keeps_a_working_model(
    clothing_rows: pd.DataFrame, tmp_path: Path,
) -> None:
    """medium's default above selection.max_rows, end to end (the row limit lowered to 100 for 240 rows)."""
    preset = tmp_path / "over.yaml"
    preset.write_text("base: medium\nselection: {max_rows: 100}\nschedule: {min_steps: 20, max_steps: 40}\n"
                      "encoders: {text: [{encoder: text_ngrams, input: {tokenizer: ngrams}}]}\n")  # no MiniLM: faster
    run = polyfuse.fit(clothing_rows, label="recommended", preset=str(preset), out=tmp_path / "run", progress=False,
                       overrides=["train.threads=1"])
    selection = json.loads((tmp_path / "run" / "metrics.json").read_text())["selection"]
    keys = [c["candidate"] for c in selection["candidates"]]
    linear = [k for k in keys if k != "late"]
    assert len(keys) == 2 and "late" in keys and linear[0] == f"{'+'.join(run.config.data.inputs)} linear", keys
    assert selection["chosen"] in (*keys, "ensemble")
    preds = polyfuse.load(tmp_path / "run").predict(clothing_rows.drop(columns=["recommended"]).head(8))
    assert len(preds) == 8
