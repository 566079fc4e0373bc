"""Multilabel classification: multi-hot targets, sigmoid probabilities, macro-F1 / accuracy."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from polyfuse.tasks.base import Encoded, TaskType, plain, probability_columns

#: A label is predicted when its probability reaches this.
THRESHOLD = 0.5


class Multilabel(TaskType):
    name = "multilabel"
    head = "multilabel"
    loss = "bce"
    main_metric = ("f1", "max")
    metric_names = ("f1", "acc")

    def label_values(self, value: Any) -> list[Any]:
        from polyfuse.tasks.labels import split_multilabel

        return split_multilabel(value)

    def encode_label(self, value: Any, ids: dict[str, int], n_classes: int) -> Encoded:
        from polyfuse.tasks.labels import label_key, split_multilabel
        from polyfuse.cells import is_missing

        if is_missing(value):
            return np.full(n_classes, np.nan, np.float32), "missing label", "missing label"
        target = np.zeros(n_classes, np.float32)  # [K] multi-hot
        unseen = []
        for label in split_multilabel(value):
            index = ids.get(label_key(label))
            if index is None:
                unseen.append(label)
            else:
                target[index] = 1.0
        if unseen:
            return target, f"labels not seen in training: {unseen!r}", "unseen label"
        return target, None, None

    def empty_label(self, n_classes: int) -> Any:
        return np.full(n_classes, np.nan, np.float32)

    def collate_labels(self, targets: list[Any], n_classes: int) -> np.ndarray:
        return np.asarray(targets, dtype=np.float32).reshape(len(targets), n_classes)  # [B, K]

    def decode_labels(self, classes: Sequence[Any], ids: Any) -> list[Any]:
        return [[c for c, on in zip(classes, row) if on >= THRESHOLD] for row in np.asarray(ids).reshape(-1, len(classes))]

    def predictions(self, outputs: Any) -> Any:
        return outputs.float().sigmoid()  # [B, K]

    def metrics(self, out_dim: int) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MultilabelAccuracy, MultilabelF1Score

        return MetricCollection({
            "f1": MultilabelF1Score(num_labels=out_dim, average="macro"),
            "acc": MultilabelAccuracy(num_labels=out_dim, average="micro"),
        })

    def metric_values(self, preds: Any, labels: Any) -> dict[str, float]:
        from torchmetrics.functional.classification import multilabel_accuracy, multilabel_f1_score

        n = preds.shape[-1]
        return {
            "f1": float(multilabel_f1_score(preds, labels.long(), num_labels=n, average="macro")),
            "acc": float(multilabel_accuracy(preds, labels.long(), num_labels=n, average="micro")),
        }

    def combine(self, outputs: Any, weights: Any) -> Any:
        p = (outputs.sigmoid() * weights).sum(dim=0).clamp(1e-7, 1 - 1e-7)  # weighted mean probability
        return p.log() - (-p).log1p()

    def table_columns(
        self, name: str, full: np.ndarray, classes: Sequence[Any], decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        labels = [None if np.isnan(r).any() else "|".join(str(c) for c, p in zip(classes, r) if p >= THRESHOLD) for r in full]
        return {name: labels, **probability_columns(name, full, classes)}

    def json_result(self, values: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
        names = [plain(c) for c in classes]
        return {
            "labels": [c for c, p in zip(names, values) if p >= THRESHOLD],
            "probabilities": {str(c): float(p) for c, p in zip(names, values)},
        }

    def explain_change(self, base: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        return np.abs(base - dropped).mean(axis=1)
