"""Task metrics (torchmetrics) by task type, and which metric decides "best"."""

from __future__ import annotations

from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
    MultilabelAccuracy,
    MultilabelF1Score,
)
from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

#: metric that ranks models per task type, and whether higher is better
MAIN_METRIC: dict[str, tuple[str, str]] = {
    "classification": ("acc", "max"),
    "multilabel": ("f1", "max"),
    "regression": ("mae", "min"),
    "generation": ("bleu4", "max"),
}


def task_metrics(task_type: str, out_dim: int) -> MetricCollection:
    """Metrics for one task: acc / f1 (macro) / auroc, or mae / rmse, or multilabel f1 / acc, or bleu1-4 / exact."""
    metrics: dict[str, nn.Module]
    if task_type == "classification":
        n = max(out_dim, 2)
        metrics = {
            "acc": MulticlassAccuracy(num_classes=n, average="micro", ignore_index=-100),
            "f1": MulticlassF1Score(num_classes=n, average="macro", ignore_index=-100),
            "auroc": MulticlassAUROC(num_classes=n, average="macro", ignore_index=-100),
        }
    elif task_type == "regression":
        metrics = {"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)}
    elif task_type == "multilabel":
        metrics = {
            "f1": MultilabelF1Score(num_labels=out_dim, average="macro"),
            "acc": MultilabelAccuracy(num_labels=out_dim, average="micro"),
        }
    elif task_type == "generation":
        from polyfuse.generation.metrics import generation_metrics

        return generation_metrics()
    else:  # pragma: no cover - config validation prevents it
        raise ValueError(f"unknown task type {task_type!r}")
    return MetricCollection(metrics)


def default_monitor(tasks: dict) -> tuple[str, str]:
    """The validation metric that picks the best checkpoint: the first task's main metric."""
    if not tasks:
        return "valid/loss", "min"
    name, task = next(iter(tasks.items()))
    metric, mode = MAIN_METRIC[task.type]
    return f"valid/{name}/{metric}", mode


def monitor_mode(monitor: str) -> str:
    """'min' for losses and errors, 'max' for scores."""
    last = monitor.rsplit("/", 1)[-1]
    return "min" if last in ("loss", "mae", "rmse", "mse") else "max"
