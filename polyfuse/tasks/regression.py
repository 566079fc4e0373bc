"""Regression: float targets (standardized for the loss), values, MAE / RMSE."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from polyfuse.tasks.base import Encoded, TaskType


class Regression(TaskType):
    name = "regression"
    head = "regression"
    loss = "mse"
    main_metric = ("mae", "min")
    metric_names = ("mae", "rmse")
    has_classes = False
    standardized = True
    integer_targets = False

    def label_values(self, value: Any) -> list[Any]:
        return []  # no vocabulary

    def label_dim(self, classes: Sequence[Any]) -> int:
        return 1

    def encode_label(self, value: Any, ids: dict[str, int], n_classes: int) -> Encoded:
        from polyfuse.cells import is_missing

        if is_missing(value):
            return np.float32(np.nan), "missing label", "missing label"
        try:
            number = float(value)
        except (TypeError, ValueError):
            return np.float32(np.nan), f"label is not a number: {str(value)[:80]!r}", "invalid label"
        if not np.isfinite(number):
            return np.float32(np.nan), "label is not a finite number", "invalid label"
        return np.float32(number), None, None

    def empty_label(self, n_classes: int) -> Any:
        return np.float32(np.nan)

    def collate_labels(self, targets: list[Any], n_classes: int) -> np.ndarray:
        return np.asarray(targets, dtype=np.float32).reshape(len(targets))  # [B]

    def decode_labels(self, classes: Sequence[Any], ids: Any) -> list[Any]:
        return [float(v) for v in np.asarray(ids).reshape(-1)]

    def predictions(self, outputs: Any) -> Any:
        return outputs.float().squeeze(-1) if outputs.shape[-1] == 1 else outputs.float()  # [B] or [B, K]

    def metrics(self, out_dim: int) -> Any:
        from torchmetrics import MetricCollection
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError

        return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False)})

    def metric_values(self, preds: Any, labels: Any) -> dict[str, float]:
        from torchmetrics.functional.regression import mean_absolute_error, mean_squared_error

        return {
            "mae": float(mean_absolute_error(preds, labels)),
            "rmse": float(mean_squared_error(preds, labels, squared=False)),
        }

    def table_columns(
        self, name: str, full: np.ndarray, classes: Sequence[Any], decode: Callable[[Any], list[Any]] | None = None,
    ) -> dict[str, Any]:
        return {name: full.reshape(len(full), -1)[:, 0]}

    def json_result(self, values: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        return {"value": float(flat[0]) if flat.size == 1 else [float(v) for v in flat]}

    def explain_change(self, base: np.ndarray, dropped: np.ndarray) -> np.ndarray:
        flat_base, flat_dropped = base.reshape(len(base), -1), dropped.reshape(len(dropped), -1)
        if flat_base.shape[1] == 1:
            return flat_base[:, 0] - flat_dropped[:, 0]
        return np.abs(flat_base - flat_dropped).mean(axis=1)
