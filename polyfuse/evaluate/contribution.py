"""Modality contribution: the metric with each modality removed at test time, and fusion weights."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import torch

from polyfuse.config import TaskConfig
from polyfuse.evaluate.metrics import summarize
from polyfuse.evaluate.predict import Predictions, collect_predictions


def modality_contribution(
    model: torch.nn.Module,
    make_batches: Callable[[], Iterable[Mapping[str, Any]]],
    tasks: Mapping[str, TaskConfig],
    full: Predictions | None = None,
) -> dict[str, Any]:
    """For every input: metrics with that input removed (marked missing) for all rows.

    Returns ``{"inputs": [...], "all": metrics, "without": {input: metrics},
    "weights": {input: mean fusion weight} or None}``.
    """
    types = {name: task.type for name, task in tasks.items()}
    inputs = list(model.input_names)
    full = full or collect_predictions(model, make_batches(), tasks)
    result: dict[str, Any] = {"inputs": inputs, "all": summarize(types, full.preds, full.labels), "without": {}}
    if len(inputs) > 1:
        for name in inputs:
            dropped = collect_predictions(model, make_batches(), tasks, drop=[name])
            result["without"][name] = summarize(types, dropped.preds, dropped.labels)
    result["weights"] = None
    if full.modality_weights is not None and full.modalities:
        mean = full.modality_weights.mean(dim=0)
        result["weights"] = {m: float(w) for m, w in zip(full.modalities, mean)}
    return result
