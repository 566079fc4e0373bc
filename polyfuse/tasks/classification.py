"""Single-label classification: class ids, softmax probabilities, accuracy / macro-F1 / AUROC."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from polyfuse.tasks.base import Encoded, TaskType, plain, probability_columns

#: Class id of a row without a usable label (ignored by the loss).
IGNORE_INDEX = -100


class Classification(TaskType):
    name = "classification"
    head = "classification"
    loss = "cross_entropy"
    main_metric = ("acc", "max")
    metric_names = ("acc", "f1", "auroc")
    single_label = True

    def encode_label(self, value: Any, ids: dict[str, int], n_classes: int) -> Encoded:
        from polyfuse.tasks.labels import label_key, normalize_label
        from polyfuse.cells import is_missing

        if is_missing(value):
            return np.int64(IGNORE_INDEX), "missing label", "missing label"
        index = ids.get(label_key(value))
        if index is None:
            return np.int64(IGNORE_INDEX), f"label {normalize_label(value)!r} not seen in training", "unseen label"
        return np.int64(index), None, None

    def empty_label(self, n_classes: int) -> Any:
        return np.int64(IGNORE_INDEX)

    def collate_labels(self, targets: list[Any], n_classes: int) -> np.ndarray:
        return np.asarray(targets, dtype=np.int64).reshape(len(targets))  # [B]

    def decode_labels(self, classes: Sequence[Any], ids: Any) -> list[Any]:
        return [None if int(i) == IGNORE_INDEX else classes[int(i)] for i in np.asarray(ids).reshape(-1)]

    def predictions(self, outputs: Any) -> Any:
        return outputs.float().softmax(dim=-1)  # [B, C]

    def labelled(self, targets: Any) -> Any:
        return targets != IGNORE_INDEX

    def metrics(self, out_dim: int) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score

        n = max(out_dim, 2)
        return MetricCollection({
            "acc": MulticlassAccuracy(num_classes=n, average="micro", ignore_index=IGNORE_INDEX),
            "f1": MulticlassF1Score(num_classes=n, average="macro", ignore_index=IGNORE_INDEX),
            "auroc": MulticlassAUROC(num_classes=n, average="macro", ignore_index=IGNORE_INDEX),
        })

    def metric_values(self, preds: Any, labels: Any) -> dict[str, float]:
        from torchmetrics.functional.classification import multiclass_accuracy, multiclass_auroc, multiclass_f1_score

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

    def combine(self, outputs: Any, weights: Any) -> Any:
        import torch

        # log of the weighted mean of the members' probabilities
        return torch.logsumexp(outputs.log_softmax(dim=-1) + weights.clamp_min(1e-12).log(), dim=0)

    def table_columns(
        self, name: str, full: np.ndarray, classes: Sequence[Any], decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        best = np.nan_to_num(full).argmax(1)
        labels = [classes[i] if not np.isnan(full[r]).any() else None for r, i in enumerate(best)]
        return {name: labels, **probability_columns(name, full, classes)}

    def json_result(self, values: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
        names = [plain(c) for c in classes]
        return {"label": names[int(values.argmax())], "probabilities": {str(c): float(p) for c, p in zip(names, values)}}

    def explain_change(self, base: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        chosen = base.argmax(axis=1)  # the class predicted with all inputs
        rows = np.arange(len(base))
        return base[rows, chosen] - dropped[rows, chosen]
