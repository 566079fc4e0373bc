"""Metrics from collected predictions (torchmetrics functional), plus confusion matrices."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multilabel_accuracy,
    multilabel_f1_score,
)
from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error

from polyfuse.train.module import labelled


def task_metric_values(task_type: str, preds: Tensor, labels: Tensor) -> dict[str, float]:
    """acc / f1 (macro) / auroc for classification; mae / rmse for regression; f1 / acc for multilabel;
    bleu1-4 / exact for generation (generated ids against target ids)."""
    keep = labelled(task_type, labels)
    preds, labels = preds[keep], labels[keep]
    if labels.numel() == 0:
        return {}
    if task_type == "generation":
        from polyfuse.generation.metrics import generation_scores

        return generation_scores(preds, labels)
    if task_type == "classification":
        n = preds.shape[-1]
        labels = labels.long()
        out = {
            "acc": float(multiclass_accuracy(preds, labels, num_classes=n, average="micro")),
            "f1": float(multiclass_f1_score(preds, labels, num_classes=n, average="macro")),
        }
        try:
            out["auroc"] = float(multiclass_auroc(preds, labels, num_classes=n, average="macro"))
        except (ValueError, RuntimeError):  # a class absent from the labels
            pass
        return out
    if task_type == "regression":
        return {
            "mae": float(mean_absolute_error(preds, labels)),
            "rmse": float(mean_squared_error(preds, labels, squared=False)),
        }
    return {
        "f1": float(multilabel_f1_score(preds, labels.long(), num_labels=preds.shape[-1], average="macro")),
        "acc": float(multilabel_accuracy(preds, labels.long(), num_labels=preds.shape[-1], average="micro")),
    }


def confusion(preds: Tensor, labels: Tensor) -> Tensor:
    """Confusion matrix [true, predicted] over labelled rows."""
    keep = labels != -100
    n = preds.shape[-1]
    return multiclass_confusion_matrix(preds[keep], labels[keep].long(), num_classes=n)


def summarize(task_types: dict[str, str], preds: dict[str, Tensor], labels: dict[str, Tensor]) -> dict[str, Any]:
    return {
        name: task_metric_values(task_types[name], preds[name], labels[name])
        for name in task_types
        if name in preds and name in labels
    }


def main_value(metrics: dict[str, dict[str, float]], task: str, task_type: str) -> float:
    from polyfuse.train.metrics import MAIN_METRIC

    return metrics.get(task, {}).get(MAIN_METRIC[task_type][0], float("nan"))


__all__ = ["task_metric_values", "confusion", "summarize", "main_value", "torch"]
