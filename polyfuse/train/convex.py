"""``train.solver: convex``: a model linear in fixed features, fitted to the optimum by scikit-learn.

Gradient steps on a 60,000 x 128 n-gram map memorise a few hundred rows within ~50 steps; the
logistic regression on the same TF-IDF features, fitted to convergence with an L2 penalty, is what
wins on small text tables. This module fits exactly that and writes it into the polyfuse model, so
the result is a normal model directory (predict, eval, serve, export):

- the model must be linear in its inputs' fixed features: every encoder a ``text_ngrams`` (sparse
  TF-IDF), a ``FeatureEncoder`` with a linear map (cached features, standardized) or a
  ``tabular_linear`` (standardized numbers, one-hot categories), the ``linear`` fusion, one
  classification or regression task whose head has no hidden layer;
- the design matrix [N, F] is the concatenation of those features (scipy sparse), each dense
  block scaled by 1/sqrt(its width) so that its rows have about unit norm, as TF-IDF rows do: one
  L2 strength then suits every block (10,000 random-convolution features are not 10,000 times
  the evidence of one TF-IDF row), and the grid suits any single block;
- ``LogisticRegression`` (classification; with and without the run's class weights) or ``Ridge``
  (regression, on the head's standardized targets) for each L2 strength of a grid, scored with the run's monitored
  metric by 5-fold cross-validation on the training rows (3-fold over 5,000 rows; the validation rows stay held out for
  the threshold, the selection and ensemble weights); the best is refit on every training row
  (ties: the stronger penalty);
- its coefficients go into the encoders' maps (first ``C`` columns), the fusion's projection
  (sums those columns) and the head (identity on them, plus the intercept).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
from joblib import Parallel, delayed
from torch.utils.data import DataLoader

from polyfuse.config import Config, ConfigError
from polyfuse.encoders.features import FEATURES_KEY, FeatureEncoder
from polyfuse.encoders.ngrams import TextNgramEncoder
from polyfuse.encoders.tabular import TabularLinearEncoder
from polyfuse.fusion.pooled import LinearFusion
from polyfuse.model import MultimodalModel
from polyfuse.train.convex_folds import chain_predictions, estimator
from polyfuse.tasks import TASKS

#: L2 strengths tried: C of LogisticRegression (inverse penalty), alpha of Ridge (penalty)
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
ALPHA_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
CV_FOLDS = 5
#: Over this many labelled training rows the L2 strength is chosen by 3-fold cross-validation
#: (LARGE_CV_FOLDS): every fold still scores thousands of rows; the convex candidate of clothing
#: (16k rows) took 121 s instead of 142, of the rating table 212 s instead of 306, same choice.
LARGE_ROWS = 5000
LARGE_CV_FOLDS = 3
ABSENT_CLASS_LOGIT = -30.0  # a class no training row has: never predicted


@dataclass
class ConvexFit:
    """What the fit chose, for metrics.json and the report."""

    estimator: str
    parameter: str  # "C" or "alpha"
    value: float
    metric: str
    scored_on: str  # e.g. "5-fold cross-validation on the training rows"
    scores: dict[str, float] = field(default_factory=dict)  # {"C=1, class-weighted": score, ...}
    features: int = 0
    rows: int = 0
    class_weighted: bool | None = None  # None: the run has no class weights

    @property
    def chosen(self) -> str:
        return _setting(self.parameter, self.value, bool(self.class_weighted))

    def to_dict(self) -> dict[str, Any]:
        return {"estimator": self.estimator, self.parameter: self.value, "class_weighted": self.class_weighted,
                "metric": self.metric, "scored_on": self.scored_on, "features": self.features, "rows": self.rows,
                "chosen": self.chosen, "scores": {k: round(v, 6) for k, v in self.scores.items()}}

    def line(self) -> str:
        grid = ", ".join(f"{k}: {v:.4f}" for k, v in self.scores.items())
        return (f"convex fit ({self.estimator}, {self.rows} rows x {self.features} features): {self.chosen}, "
                f"{self.metric} on {self.scored_on} {self.scores[self.chosen]:.4f} ({grid})")


def is_linear_in_fixed_features(encoder: torch.nn.Module) -> bool:
    """Whether ``encoder``'s output is an affine map of fixed features that the convex fit can write."""
    linear_features = isinstance(encoder, FeatureEncoder) and isinstance(encoder.proj, torch.nn.Linear)
    return isinstance(encoder, (TextNgramEncoder, TabularLinearEncoder)) or linear_features


def block_scale(encoder: torch.nn.Module) -> float:
    """Factor on an input's design columns: 1 for TF-IDF (unit-norm rows), 1/sqrt(width) for dense blocks."""
    return 1.0 if isinstance(encoder, TextNgramEncoder) else float(_width(encoder)) ** -0.5


def _width(encoder: torch.nn.Module) -> int:
    if isinstance(encoder, TextNgramEncoder):
        return int(encoder.table.num_embeddings)
    return int(encoder.feature_dim)


def check_convex(config: Config, model: MultimodalModel) -> str:
    """The one task's name; ConfigError naming what makes ``model`` not linear in fixed features."""
    why = "train.solver=convex fits models linear in fixed features"
    if not isinstance(model.fusion, LinearFusion):
        raise ConfigError(f"{why}: set model.fusion.name=linear (got {config.model.fusion.name!r})")
    for name, encoder in model.encoders.items():
        if not is_linear_in_fixed_features(encoder):
            raise ConfigError(f"{why}: input {name!r} has encoder {type(encoder).__name__}; use text_ngrams, tabular_linear "
                              "or a features encoder (sequence_rocket, sequence_summary, image_pixels, pretrained_*_embedding)")
    if len(config.tasks) != 1 or config.objectives:
        raise ConfigError(f"{why}: one classification or regression task and no objectives (got tasks "
                          f"{sorted(config.tasks)}, objectives {sorted(config.objectives)})")
    task_name, task = next(iter(config.tasks.items()))
    if not (TASKS[task.type].single_label or TASKS[task.type].standardized):
        raise ConfigError(f"{why}: task {task_name!r} is {task.type}; classification or regression only")
    if int(task.head.get("hidden", 0) or 0) > 0:
        raise ConfigError(f"{why}: tasks.{task_name}.head.hidden must be 0 (a linear head)")
    return task_name


def _design(model: MultimodalModel, loader: DataLoader, task: str) -> tuple[Any, np.ndarray]:
    """Sparse design matrix [N, F] (inputs' features side by side, absent -> 0) and labels [N]."""
    from scipy import sparse

    blocks: list[list[Any]] = []
    labels = []
    for batch in loader:
        row_blocks = []
        for name, encoder in model.encoders.items():
            inputs, present = batch["inputs"][name], batch["present"][name].bool()
            if isinstance(encoder, TextNgramEncoder):
                ids = inputs["input_ids"].long().clamp(0, encoder.table.num_embeddings - 1)  # [B,K]
                mask = inputs["attention_mask"].bool() & present[:, None]
                values = (inputs["weights"].float() if "weights" in inputs else torch.ones_like(ids, dtype=torch.float))
                rows = torch.arange(ids.shape[0])[:, None].expand_as(ids)
                block = sparse.csr_matrix(
                    (values[mask].numpy().astype(np.float64), (rows[mask].numpy(), ids[mask].numpy())),
                    shape=(ids.shape[0], encoder.table.num_embeddings),
                )  # duplicate (row, id) pairs add up, as embedding_bag's sum does
            elif isinstance(encoder, TabularLinearEncoder):
                block = _tabular_block(encoder, inputs, present)
            else:
                assert isinstance(encoder, FeatureEncoder)
                feats = inputs[FEATURES_KEY] if FEATURES_KEY in inputs else encoder.extract(dict(inputs))
                scaled = (feats.float() - encoder.feature_mean) / encoder.feature_std  # as from_features
                scaled = torch.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).clamp(-20.0, 20.0)
                block = sparse.csr_matrix(torch.where(present[:, None], scaled, 0.0).numpy().astype(np.float64))
            row_blocks.append(block * block_scale(encoder))
        blocks.append(row_blocks)
        labels.append(batch["labels"][task].numpy())
    if not blocks:
        return sparse.csr_matrix((0, 0)), np.zeros(0)
    return sparse.vstack([sparse.hstack(b, format="csr") for b in blocks], format="csr"), np.concatenate(labels)


def _tabular_block(encoder: TabularLinearEncoder, inputs: Mapping[str, torch.Tensor], present: torch.Tensor) -> Any:
    """[B, numbers + one column per (column, id)]: the numbers as given (standardized by the pipeline),
    then the one-hot categories, in the order of ``encoder.feature_dim``; absent rows are 0."""
    from scipy import sparse

    parts = []
    if encoder.num_numeric:
        numbers = inputs["numeric"].float()  # [B,N]
        parts.append(sparse.csr_matrix(torch.where(present[:, None], numbers, 0.0).numpy().astype(np.float64)))
    if encoder.lookup is not None:
        ids = encoder.lookup(inputs["categorical"])  # [B,K] ids into the shared table
        rows = torch.arange(ids.shape[0])[:, None].expand_as(ids)
        keep = present[:, None].expand_as(ids)
        parts.append(sparse.csr_matrix((np.ones(int(keep.sum())), (rows[keep].numpy(), ids[keep].numpy())),
                                       shape=(ids.shape[0], encoder.lookup.total)))
    return sparse.hstack(parts, format="csr")


def fit_convex(
    model: MultimodalModel, config: Config, train: DataLoader, task_dims: Mapping[str, int],
    class_weights: Mapping[str, list[float]], monitor: str, mode: str,
    score: Callable[[str, np.ndarray, np.ndarray], float],
) -> ConvexFit:
    """Fit the linear model on the rows of ``train`` (an in-order loader), choose its L2 strength, write it into ``model``.

    ``score(metric, preds, labels)`` is the trainer's metric (preds: probabilities, or values in
    the targets' units); ``monitor`` names the metric (``.../<metric>``) and ``mode`` whether
    higher is better.
    """
    task = check_convex(config, model)
    kind = "logistic" if TASKS[config.tasks[task].type].single_label else "ridge"
    num_classes = int(task_dims[task])
    head = model.heads[task]
    x, y = _design(model, train, task)
    keep = y != -100 if kind == "logistic" else ~np.isnan(y)
    x, y = x[keep], y[keep]
    if x.shape[0] < 2:
        raise ConfigError(f"train.solver=convex: {x.shape[0]} labelled training rows; at least 2 are needed")
    mean = float(getattr(head, "target_mean", torch.zeros(1))[0]) if kind == "ridge" else 0.0
    std = float(getattr(head, "target_std", torch.ones(1))[0]) if kind == "ridge" else 1.0
    target = y.astype(np.int64) if kind == "logistic" else (y - mean) / std
    weights = class_weights.get(task)
    balanced = {i: float(w) for i, w in enumerate(weights)} if weights is not None else None
    metric = monitor.split("/")[-1]

    def values(preds: np.ndarray) -> np.ndarray:
        return preds if kind == "logistic" else preds * std + mean

    # strongest penalty first (small C, large alpha), the run's class weights before none: a tie keeps the first.
    # With class weights the unweighted fit is tried too: weighting helps macro-F1 and often costs accuracy,
    # and the metric decides
    strengths = sorted(C_GRID) if kind == "logistic" else sorted(ALPHA_GRID, reverse=True)
    settings = [(v, w) for v in strengths for w in ([balanced, None] if balanced is not None else [None])]
    seed = int(config.train.seed)
    # scored by cross-validation on the training rows, not on the validation split: ~5x the rows
    # (90 validation rows pick noise among a dozen settings), and the validation rows stay held
    # out for the threshold, the selection and the ensemble weights
    folds = _folds(target, kind, seed)
    preds = {s: np.zeros((len(target), num_classes)) if kind == "logistic" else np.zeros(len(target)) for s in range(len(settings))}
    chains = [[i for i, (_, w) in enumerate(settings) if id(w) == weighting]  # strongest penalty first
              for weighting in dict.fromkeys(id(w) for _, w in settings)]
    jobs = [(chain, tr, va) for chain in chains for tr, va in folds]
    # one job per (class weighting, fold), in torch's thread budget (train.threads): L-BFGS runs on one core
    workers = max(1, min(len(jobs), torch.get_num_threads()))
    results = Parallel(n_jobs=workers)(
        delayed(chain_predictions)(kind, [settings[i] for i in chain], seed, x[tr], target[tr], x[va], num_classes)
        for chain, tr, va in jobs
    )
    for (chain, _, va), outs in zip(jobs, results):
        for i, fold_preds in zip(chain, outs):
            preds[i][va] = fold_preds
    scores = [score(metric, values(preds[i]), y) for i in range(len(settings))]
    best = 0
    for i in range(1, len(settings)):
        if (scores[i] > scores[best]) if mode == "max" else (scores[i] < scores[best]):
            best = i
    value, class_weight = settings[best]
    final = estimator(kind, value, class_weight, seed).fit(x, target)
    _write(model, task, final, kind, num_classes)
    parameter = "C" if kind == "logistic" else "alpha"
    return ConvexFit(
        "LogisticRegression" if kind == "logistic" else "Ridge", parameter, float(value), metric,
        f"{len(folds)}-fold cross-validation on the training rows",
        {_setting(parameter, v, w is not None): sc for (v, w), sc in zip(settings, scores)},
        int(x.shape[1]), int(x.shape[0]), None if balanced is None else class_weight is not None,
    )


def _setting(parameter: str, value: float, weighted: bool) -> str:
    return f"{parameter}={value:g}" + (", class-weighted" if weighted else "")


def fold_count(rows: int) -> int:
    """Cross-validation folds that choose the L2 strength of a fit on ``rows`` labelled rows."""
    return CV_FOLDS if rows <= LARGE_ROWS else LARGE_CV_FOLDS


def _folds(target: np.ndarray, kind: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    folds = fold_count(len(target))
    if kind == "logistic":
        counts = np.bincount(target)
        smallest = int(counts[counts > 0].min())
        k = max(2, min(folds, smallest))
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(target, target))
    return list(KFold(min(folds, len(target)), shuffle=True, random_state=seed).split(target))


@torch.no_grad()
def _write(model: MultimodalModel, task: str, estimator: Any, kind: str, num_classes: int) -> None:
    """Coefficients [C, F] and intercepts [C] into the encoders, the fusion's projection and the head."""
    if kind == "logistic":
        classes = estimator.classes_.astype(int)
        coef = np.zeros((num_classes, estimator.coef_.shape[1]))
        intercept = np.full(num_classes, ABSENT_CLASS_LOGIT)
        if len(classes) == 2:  # binary: one row of coefficients for classes[1]; classes[0] at logit 0
            coef[classes[1]] = estimator.coef_[0]
            intercept[classes] = [0.0, estimator.intercept_[0]]
        else:
            coef[classes] = estimator.coef_
            intercept[classes] = estimator.intercept_
    else:
        coef = np.asarray(estimator.coef_, dtype=np.float64).reshape(1, -1)
        intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    outputs = coef.shape[0]
    fusion = model.fusion
    assert isinstance(fusion, LinearFusion)
    if fusion.output_dim < outputs:
        raise ConfigError(f"train.solver=convex: model.dim {fusion.output_dim} is below the {outputs} outputs; raise model.dim")
    fusion.proj.weight.zero_()
    fusion.proj.bias.zero_()
    offset, column = 0, 0
    for name, encoder in model.encoders.items():
        width = _width(encoder)
        # the fit saw the block scaled; the model sees it unscaled: the scale goes into the map
        part = torch.as_tensor(coef[:, offset:offset + width] * block_scale(encoder), dtype=torch.float32)  # [C, F_i]
        dim = int(encoder.output_dim)
        if dim < outputs:
            raise ConfigError(f"train.solver=convex: input {name!r} has width {dim}, below the {outputs} outputs; "
                              f"raise its encoder's dim")
        if isinstance(encoder, TextNgramEncoder):
            encoder.table.weight.zero_()
            encoder.table.weight[:, :outputs] = part.T
            encoder.bias.zero_()
        elif isinstance(encoder, TabularLinearEncoder):
            encoder.bias.zero_()
            numbers = encoder.num_numeric
            if encoder.numeric is not None:
                encoder.numeric.weight.zero_()
                encoder.numeric.weight[:outputs] = part[:, :numbers]
            if encoder.categories is not None:
                encoder.categories.weight.zero_()
                encoder.categories.weight[:, :outputs] = part[:, numbers:].T
        else:
            encoder.proj.weight.zero_()
            encoder.proj.weight[:outputs] = part
            encoder.proj.bias.zero_()
        fusion.proj.weight[torch.arange(outputs), column + torch.arange(outputs)] = 1.0  # sum the inputs' logits
        offset += width
        column += dim
    linear = model.heads[task].net[-1]
    linear.weight.zero_()
    linear.weight[torch.arange(outputs), torch.arange(outputs)] = 1.0
    linear.bias.copy_(torch.as_tensor(intercept, dtype=torch.float32))
