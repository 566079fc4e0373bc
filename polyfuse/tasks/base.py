"""What a task type owns: head and loss defaults, label encoding, predictions, metrics, and how a
result is written to a table row and to JSON. One subclass per type (``polyfuse/tasks/<type>.py``).

numpy at import time only: the ONNX predictor and the server use the table/JSON side without torch;
the tensor methods import torch (and torchmetrics) when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor
    from torchmetrics import MetricCollection

#: A label cell that could not be used: (target, reason, problem category) or (target, None, None).
Encoded = tuple[Any, "str | None", "str | None"]


class TaskType:
    """One task type. Class attributes are its defaults; methods are its behaviour."""

    name: ClassVar[str]
    head: ClassVar[str]  # registered head
    loss: ClassVar[str]  # registered objective
    main_metric: ClassVar[tuple[str, str]]  # (metric that ranks models, "max" | "min")
    metric_names: ClassVar[tuple[str, ...]]  # what metrics() and metric_values() compute
    has_classes: ClassVar[bool] = True  # its labels have a fitted vocabulary (classes)
    deployable: ClassVar[bool] = True  # exported to ONNX, served, ensembled and explained
    # one class per row: stratified splits and folds, confusion matrices, class weights, a tunable threshold
    single_label: ClassVar[bool] = False
    standardized: ClassVar[bool] = False  # the loss reads targets in the head's standardized units
    integer_targets: ClassVar[bool] = True  # metrics read targets as integers (ids, multi-hot)
    text_targets: ClassVar[bool] = False  # labels are texts encoded to token ids (polyfuse.data.targets)

    # ------------------------------------------------------------------ labels (numpy)
    def label_values(self, value: Any) -> list[Any]:
        """The labels of one cell while fitting the vocabulary (one, or several for multilabel)."""
        from polyfuse.tasks.labels import normalize_label

        return [normalize_label(value)]

    def label_dim(self, classes: Sequence[Any]) -> int:
        """Output width of the head."""
        return len(classes)

    def encode_label(self, value: Any, ids: dict[str, int], n_classes: int) -> Encoded:
        raise NotImplementedError

    def empty_label(self, n_classes: int) -> Any:
        """The target of a row without the label column."""
        raise NotImplementedError

    def collate_labels(self, targets: list[Any], n_classes: int) -> np.ndarray:
        raise NotImplementedError

    def decode_labels(self, classes: Sequence[Any], ids: Any) -> list[Any]:
        raise NotImplementedError

    # ------------------------------------------------------------------ tensors (torch)
    def predictions(self, outputs: "Tensor") -> "Tensor":
        """Head outputs -> what metrics, predictors and deployed graphs read."""
        raise NotImplementedError

    def eval_predictions(self, head: Any, outputs: "Tensor", fused: Any) -> "Tensor":
        """Predictions for training-time validation metrics (generation decodes; others read outputs)."""
        return self.predictions(outputs)

    def labelled(self, targets: "Tensor") -> "Tensor":
        """Bool [B]: rows that carry a label."""
        import torch

        if targets.dim() > 1:
            return ~torch.isnan(targets).any(dim=-1)
        return ~torch.isnan(targets)

    def metric_targets(self, targets: "Tensor") -> "Tensor":
        return targets.long() if self.integer_targets else targets

    def metrics(self, out_dim: int) -> "MetricCollection":
        """torchmetrics for training-time validation and test."""
        raise NotImplementedError

    def metric_values(self, preds: "Tensor", labels: "Tensor") -> dict[str, float]:
        """The same metrics from collected predictions of labelled rows (labels already filtered)."""
        raise NotImplementedError

    def combine(self, outputs: "Tensor", weights: "Tensor") -> "Tensor":
        """Ensemble: stacked member outputs [n, B, C] and weights [n, 1, ...] -> one output [B, C]."""
        return (outputs * weights).sum(dim=0)

    def head_offers(self, task: Any) -> dict[str, Any]:
        """Values the builder injects into the head besides its widths."""
        return {}

    # ------------------------------------------------------------------ results (numpy)
    def table_columns(
        self, name: str, full: np.ndarray, classes: Sequence[Any], decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        """A predictions table's columns for ``full`` [N, ...] (NaN rows: no prediction)."""
        raise NotImplementedError

    def result_columns(
        self, name: str, values: np.ndarray, kept: np.ndarray, n_rows: int, classes: Sequence[Any],
        decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        """A chunk's columns from the predictions ``values`` of the rows ``kept`` (positions in the chunk)."""
        values = np.asarray(values, dtype=np.float64)
        full = np.full((n_rows, *values.shape[1:]), np.nan)  # rows without a prediction stay NaN
        full[np.asarray(kept, dtype=np.int64)] = values
        return self.table_columns(name, full, classes, decode)

    def json_result(self, values: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
        """One row's result as the server returns it."""
        raise NotImplementedError

    def explain_change(self, base: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        """[B] how much the prediction moved when an input was left out (see ``polyfuse.explain``)."""
        raise NotImplementedError


def plain(value: Any) -> Any:
    """numpy scalars -> Python values (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def probability_columns(name: str, full: np.ndarray, classes: Sequence[Any]) -> dict[str, np.ndarray]:
    """``<task>:p:<class>`` per class."""
    return {f"{name}:p:{c}": full[:, j] for j, c in enumerate(classes)}
