"""Ensembles of trained runs: weights fitted on held-out predictions, saved as one model directory.

- ``member_predictions``: a finished run's predictions on one split of its own data (its own
  pipeline), aligned by row.
- ``greedy_weights``: Caruana et al.'s ensemble selection with replacement: start from the best
  single model, add (again) whichever member improves the held-out metric most, keep the best
  prefix; the weights are how often each member was picked. Never worse on the held-out rows
  than the best single member, and sparse.
- ``merged_pipeline``: one data pipeline for all members; inputs two members share must have been
  fitted identically (same training rows and options), or the ensemble is refused.
- ``save_ensemble``: an ``EnsembleModel`` from the members' weights, evaluated and written with
  ``save_model_dir``, so that predict, eval, serve and export load it like any other model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from polyfuse.checkpoint import LoadedCheckpoint, load_model_dir, save_model_dir
from polyfuse.config import Config, EnsembleMemberConfig
from polyfuse.errors import PolyfuseError
from polyfuse.tasks import TASKS

DEFAULT_ROUNDS = 25


@dataclass
class MemberPredictions:
    """A run's predictions on one split: ``preds`` [N, C] probabilities or [N] values, ``labels`` [N]."""

    run: Path
    rows: np.ndarray  # [N] row numbers within the split's table
    preds: np.ndarray
    labels: np.ndarray
    classes: list[Any] | None


def member_predictions(run: str | Path, split: str, task: str, *, loaded: LoadedCheckpoint | None = None) -> MemberPredictions:
    """Predictions of the run in ``run`` on ``split`` (read and encoded with the run's own pipeline)."""
    from polyfuse.data.collate import Collator
    from polyfuse.data.prepare import prepare_data
    from polyfuse.evaluate.predict import collect_predictions
    from polyfuse.evaluate.report import loader_factory

    loaded = loaded or load_model_dir(run)
    prepared = prepare_data(loaded.config, pipeline=loaded.pipeline, splits=(split,), progress=False)
    dataset = prepared.datasets.get(split)
    if dataset is None or len(dataset) == 0:
        raise PolyfuseError(f"{run}: no {split} rows to fit ensemble weights on")
    tasks = {task: loaded.config.tasks[task]}
    got = collect_predictions(loaded.model, loader_factory(dataset, Collator(loaded.pipeline), 256)(), tasks)
    rows = got.rows.numpy() if got.rows is not None else np.arange(len(dataset))
    order = np.argsort(rows, kind="stable")
    kind = loaded.config.tasks[task].type
    classes = list(loaded.pipeline.classes(task)) if TASKS[kind].has_classes else None
    return MemberPredictions(Path(run), rows[order], got.preds[task].numpy()[order], got.labels[task].numpy()[order], classes)


def metric_function(task_type: str, metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """(predictions, labels) -> the value of ``metric`` as the trainer computes it."""
    from polyfuse.evaluate.metrics import task_metric_values

    def score(preds: np.ndarray, labels: np.ndarray) -> float:
        values = task_metric_values(task_type, torch.as_tensor(preds), torch.as_tensor(labels))
        if metric not in values:
            raise PolyfuseError(f"metric {metric!r} is not computed for {task_type} tasks; computed: {', '.join(values)}")
        return float(values[metric])

    return score


def greedy_weights(
    preds: Sequence[np.ndarray], labels: np.ndarray, score: Callable[[np.ndarray, np.ndarray], float],
    mode: str, rounds: int = DEFAULT_ROUNDS,
) -> tuple[list[float], float]:
    """Ensemble selection with replacement; returns (weights summing to 1, held-out score of the ensemble)."""
    if not preds:
        raise ValueError("no member predictions")
    better = (lambda a, b: a > b + 1e-12) if mode == "max" else (lambda a, b: a < b - 1e-12)
    counts = np.zeros(len(preds))
    total = np.zeros_like(preds[0], dtype=np.float64)
    best_counts, best_score = None, None
    for _ in range(rounds):
        pick, pick_score = None, None
        for i, p in enumerate(preds):
            value = score((total + p) / (counts.sum() + 1), labels)
            if pick_score is None or better(value, pick_score):
                pick, pick_score = i, value
        assert pick is not None and pick_score is not None
        counts[pick] += 1
        total += preds[pick]
        if best_score is None or better(pick_score, best_score):
            best_counts, best_score = counts.copy(), pick_score
    assert best_counts is not None and best_score is not None
    return [float(c) for c in best_counts / best_counts.sum()], float(best_score)


#: A candidate joins the ensemble's pool only when its own held-out score is within this fraction of
#: the best candidate's (Caruana et al.'s library pruning): a far weaker member that wins a round on a
#: few held-out rows is noise, not complementarity.
POOL_TOLERANCE = 0.10


def close_to_best(scores: Sequence[float], mode: str, tolerance: float = POOL_TOLERANCE) -> list[bool]:
    """Per score: within ``tolerance`` (a fraction of the best score's magnitude) of the best one."""
    best = max(scores) if mode == "max" else min(scores)
    margin = tolerance * abs(best)
    return [s >= best - margin - 1e-12 if mode == "max" else s <= best + margin + 1e-12 for s in scores]


def merged_pipeline(members: Sequence[LoadedCheckpoint]) -> Any:
    """One DataPipeline holding every member's inputs; PolyfuseError when two members fitted an input differently."""
    from polyfuse.data.pipeline import DataPipeline

    processors: dict[str, Any] = {}
    kinds: dict[str, str] = {}
    states: dict[str, str] = {}
    first = members[0].pipeline
    for loaded in members:
        pipe = loaded.pipeline
        if json.dumps(pipe.state_dict()["tasks"], sort_keys=True, default=str) != json.dumps(
                first.state_dict()["tasks"], sort_keys=True, default=str):
            raise PolyfuseError(f"{loaded.path}: its labels were encoded differently from {members[0].path}'s")
        for name, state in pipe.state_dict()["inputs"].items():
            text = json.dumps(state, sort_keys=True, default=str)
            if name in states and states[name] != text:
                raise PolyfuseError(f"{loaded.path}: input {name!r} was fitted differently from another member's")
            if name not in states:
                states[name], processors[name], kinds[name] = text, pipe.processors[name], pipe.kinds[name]
    return DataPipeline(processors, dict(first.labels), kinds)


def ensemble_config(members: Sequence[tuple[str, float, LoadedCheckpoint]]) -> Config:
    """The config of an ensemble: the heaviest member's, with every member's inputs and ``model.ensemble``."""
    heaviest = max(members, key=lambda m: m[1])[2].config
    config = heaviest.copy()
    inputs = {}
    for _, _, loaded in members:
        inputs.update(loaded.config.data.inputs)
    config.data.inputs = inputs
    config.data.use = None
    config.model.ensemble = [
        EnsembleMemberConfig(
            name=key, weight=round(weight, 6), inputs=list(loaded.model.input_names),
            encoders=dict(loaded.config.model.encoders), fusion=loaded.config.model.fusion, dim=loaded.config.model.dim,
            heads={task: dict(spec.head) for task, spec in loaded.config.tasks.items()},
        )
        for key, weight, loaded in members
    ]
    return config


def save_ensemble(members: Sequence[tuple[str, float, LoadedCheckpoint]], out: str | Path) -> dict[str, Any]:
    """Build, evaluate (on the heaviest member's valid/test rows) and save the ensemble; returns its metrics."""
    from polyfuse.build import build_model
    from polyfuse.data.collate import Collator
    from polyfuse.data.prepare import prepare_data
    from polyfuse.evaluate.report import evaluate_model, write_report

    out = Path(out)
    members = [m for m in members if m[1] > 0]
    pipeline = merged_pipeline([m[2] for m in members])
    config = ensemble_config(members)
    specs, task_dims = pipeline.specs(), pipeline.task_dims()
    model = build_model(config, specs, task_dims)
    for target, (_, _, loaded) in zip(model.members, members):  # type: ignore[attr-defined]
        target.load_state_dict(loaded.model.state_dict())
    model.eval()
    prepared = prepare_data(config, pipeline=pipeline, splits=("valid", "test"), progress=False)
    datasets = {s: d for s, d in prepared.datasets.items() if len(d)}
    classes = {t: pipeline.classes(t) for t, task in config.tasks.items() if TASKS[task.type].has_classes}
    evaluation = evaluate_model(model, config, datasets, Collator(pipeline), classes, out)
    heaviest = max(members, key=lambda m: m[1])[2]
    info = {
        "encoders": {f"{key}/{n}": type(e).__name__ for key, _, loaded in members for n, e in loaded.model.encoders.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "ensemble": [{"member": key, "weight": round(w, 4)} for key, w, _ in members],
    }
    metrics: dict[str, Any] = {
        "name": config.name, "data": config.data.dataset or config.data.train, "fusion": "ensemble", **info,
        **evaluation["splits"],
    }
    if "contribution" in evaluation:
        metrics["contribution"] = evaluation["contribution"]
    if "data_report" in heaviest.metrics:
        metrics["data_report"] = heaviest.metrics["data_report"]
    save_model_dir(out, model, config, specs, task_dims, pipeline, metrics)
    for item in heaviest.path.glob("data_report.*"):  # the per-row data report the summary links to
        shutil.copy2(item, out / item.name)
    write_report(out, config, evaluation, summary=info, data_report=metrics.get("data_report"))
    return metrics
