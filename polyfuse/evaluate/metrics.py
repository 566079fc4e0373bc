"""Metrics from collected predictions (torchmetrics functional), plus confusion matrices."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix

from polyfuse.tasks import TASKS
from polyfuse.tasks.classification import IGNORE_INDEX


def task_metric_values(task_type: str, preds: Tensor, labels: Tensor) -> dict[str, float]:
    """The task type's metrics over the labelled rows: acc / f1 (macro) / auroc for classification;
    mae / rmse for regression; f1 / acc for multilabel; bleu1-4 / exact for generation."""
    kind = TASKS[task_type]
    keep = kind.labelled(labels)
    preds, labels = preds[keep], labels[keep]
    if labels.numel() == 0:
        return {}
    return kind.metric_values(preds, labels)


def confusion(preds: Tensor, labels: Tensor) -> Tensor:
    """Confusion matrix [true, predicted] over labelled rows."""
    keep = labels != IGNORE_INDEX
    n = preds.shape[-1]
    return multiclass_confusion_matrix(preds[keep], labels[keep].long(), num_classes=n)


def summarize(task_types: dict[str, str], preds: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, Any]:
    return {
        name: task_metric_values(task_types[name], preds[name], labels[name])
        for name in task_types
        if name in preds and name in labels
    }


def main_value(metrics: dict[str, dict[str, float]], task: str, task_type: str) -> float:
    return metrics.get(task, {}).get(TASKS[task_type].main_metric[0], float("nan"))


__all__ = ["task_metric_values", "confusion", "summarize", "main_value", "torch"]
