"""Binary decision thresholds tuned on validation and folded into the head's bias.

With two classes, predicting class 1 when ``p1 > t`` is the same as ``z1 - z0 > logit(t)``.
Adding ``logit(t)`` to class 0's output bias makes the plain argmax of every engine (PyTorch,
ONNX Runtime, the server) take the tuned decision; AUROC is unchanged, and probabilities are
those of the shifted logits (so ``p1 > 0.5`` exactly where the tuned rule says class 1).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from polyfuse.config import Config
from polyfuse.tasks import TASKS

GRID = np.linspace(0.02, 0.98, 97)


def _last_linear(head: nn.Module) -> nn.Linear | None:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears and linears[-1].bias is not None else None


def _score(metric: str, labels: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "acc":
        return float((labels == predicted).mean())
    scores = []
    for c in (0, 1):
        tp = float(((predicted == c) & (labels == c)).sum())
        fp = float(((predicted == c) & (labels != c)).sum())
        fn = float(((predicted != c) & (labels == c)).sum())
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def best_threshold(p1: np.ndarray, labels: np.ndarray, metric: str) -> tuple[float, float, float]:
    """(threshold, score at it, score at 0.5): the grid threshold with the best score (nearest 0.5 on ties)."""
    at_half = _score(metric, labels, (p1 > 0.5).astype(np.int64))
    best_t, best = 0.5, at_half
    for t in sorted(GRID, key=lambda v: abs(v - 0.5)):
        score = _score(metric, labels, (p1 > t).astype(np.int64))
        if score > best + 1e-12:
            best_t, best = float(t), score
    return best_t, best, at_half


def tune_thresholds(model: nn.Module, config: Config, datasets: Mapping[str, Any], collate: Any, monitor: str) -> dict[str, Any]:
    """Tune each binary task with ``threshold: tune`` on the validation split; returns what was chosen."""
    from polyfuse.evaluate.predict import collect_predictions
    from polyfuse.evaluate.report import loader_factory

    tasks = {n: t for n, t in config.tasks.items() if TASKS[t.type].single_label and t.threshold == "tune"}
    valid = datasets.get("valid")
    if not tasks or valid is None or len(valid) == 0:
        return {}
    metric = "acc" if monitor.endswith("/acc") else "f1"
    preds = collect_predictions(model, loader_factory(valid, collate, 256)(), tasks)
    chosen: dict[str, Any] = {}
    for name in tasks:
        probs, labels = preds.preds.get(name), preds.labels.get(name)
        linear = _last_linear(model.heads[name])
        if probs is None or labels is None or probs.shape[-1] != 2 or linear is None:
            continue
        keep = labels.numpy() >= 0
        y, p1 = labels.numpy()[keep], probs[:, 1].numpy()[keep]
        if len(np.unique(y)) < 2:
            continue
        t, score, at_half = best_threshold(p1, y, metric)
        with torch.no_grad():
            linear.bias[0] += math.log(t / (1.0 - t))
        chosen[name] = {"threshold": round(t, 4), "metric": metric, "valid_at_threshold": round(score, 4),
                        "valid_at_0.5": round(at_half, 4)}
    return chosen
