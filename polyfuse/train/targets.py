"""What the trainer fits from the training labels: class weights and regression target scales."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from polyfuse.config import TaskConfig
from polyfuse.tasks import TASKS


def training_labels(dataset: Any, task: str) -> np.ndarray:
    """The encoded labels of one task over the kept training rows (never augmented).

    A split streamed from shards answers from the labels stored while sharding (no pass over the rows).
    """
    from polyfuse.train.features import plain_examples

    if hasattr(dataset, "task_labels"):
        return np.asarray(dataset.task_labels(task))

    return np.asarray([ex.labels[task] for ex in plain_examples(dataset)])


def balanced_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """``n / (num_classes_seen * count_c)`` per class (scikit-learn's "balanced"); 1.0 for unseen classes."""
    labels = labels[labels >= 0]
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes).astype(np.float64)
    seen = counts > 0
    weights = np.ones(num_classes)
    weights[seen] = len(labels) / (seen.sum() * counts[seen])
    return weights.tolist()


def class_weights(tasks: Mapping[str, TaskConfig], train: Any, task_dims: Mapping[str, int]) -> dict[str, list[float]]:
    """Per-class loss weights of the classification tasks with ``class_weights: balanced``."""
    out = {}
    for name, task in tasks.items():
        if TASKS[task.type].single_label and task.class_weights == "balanced":
            out[name] = balanced_weights(training_labels(train, name), int(task_dims[name]))
    return out


def fit_regression_targets(model: torch.nn.Module, tasks: Mapping[str, TaskConfig], train: Any) -> None:
    """Regression heads learn standardized targets: their mean / std come from the training labels."""
    for name, task in tasks.items():
        head = model.heads[name] if name in model.heads else None
        if TASKS[task.type].standardized and hasattr(head, "fit_targets"):
            head.fit_targets(torch.as_tensor(training_labels(train, name), dtype=torch.float64))
