"""Task objectives: cross-entropy, MSE / L1 (NaN targets = missing labels), multilabel BCE.

Every loss is a mean over the labelled entries only; when a batch has none it returns a
zero that still has a gradient path (so a training step never breaks on a label-less batch).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from polyfuse.objectives.base import Objective
from polyfuse.registry import OBJECTIVES


def _config_error(message: str) -> Exception:
    from polyfuse.config import ConfigError

    return ConfigError(message)


def _masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum(values * weights) / sum(weights)``; 0 (with grad) when the weights are all 0."""
    return (values * weights).sum() / weights.sum().clamp(min=torch.finfo(values.dtype).tiny)


def _match_shapes(outputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Accept [B] targets for [B, 1] outputs and the other way round."""
    if outputs.dim() == targets.dim() + 1 and outputs.shape[-1] == 1:
        outputs = outputs.squeeze(-1)
    elif targets.dim() == outputs.dim() + 1 and targets.shape[-1] == 1:
        targets = targets.squeeze(-1)
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} do not match")
    return outputs, targets


@OBJECTIVES.register("cross_entropy", task="classification")
class CrossEntropyObjective(Objective):
    """Cross-entropy over class logits [B, C] and class ids [B]; ``ignore_index`` rows are skipped.

    ``label_smoothing`` in [0, 1); ``class_weights`` (one per class) weigh rows by their
    label, and the mean is taken over those weights (the same as torch's weighted mean without smoothing).
    """

    def __init__(
        self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None, ignore_index: int = -100
    ) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise _config_error(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.ignore_index = int(ignore_index)
        weights = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        if weights is not None and (weights.dim() != 1 or bool((weights < 0).any())):
            raise _config_error("class_weights: must be a list of non-negative numbers, one per class")
        self.register_buffer("class_weights", weights)

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        targets = targets.long()
        valid = targets != self.ignore_index
        weight = self.class_weights
        if weight is not None and weight.shape[0] != outputs.shape[-1]:
            raise _config_error(f"class_weights: {weight.shape[0]} weights for {outputs.shape[-1]} classes")
        per_row = F.cross_entropy(
            outputs, targets, ignore_index=self.ignore_index, reduction="none", label_smoothing=self.label_smoothing
        )  # [B]; 0 for ignored rows
        row_weights = valid.to(outputs.dtype)
        if weight is not None:  # each row weighs as much as its label's class
            row_weights = row_weights * weight.to(outputs.dtype)[torch.where(valid, targets, torch.zeros_like(targets))]
        return _masked_mean(per_row, row_weights)


class _ElementwiseRegression(Objective):
    """Shared part of MSE / L1: entries whose target is NaN carry no label and are skipped."""

    def elementwise(self, diff: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        outputs, targets = _match_shapes(outputs, targets.to(outputs.dtype))
        valid = ~torch.isnan(targets)
        diff = outputs - torch.where(valid, targets, outputs.detach())
        return _masked_mean(self.elementwise(diff), valid.to(outputs.dtype))


@OBJECTIVES.register("mse", task="regression")
class MSEObjective(_ElementwiseRegression):
    """Mean squared error over the labelled (non-NaN) targets."""

    def elementwise(self, diff: Tensor) -> Tensor:
        return diff.pow(2)


@OBJECTIVES.register("l1", task="regression")
class L1Objective(_ElementwiseRegression):
    """Mean absolute error over the labelled (non-NaN) targets."""

    def elementwise(self, diff: Tensor) -> Tensor:
        return diff.abs()


@OBJECTIVES.register("bce", task="multilabel")
class BCEObjective(Objective):
    """Binary cross-entropy over label logits [B, K] and 0/1 targets [B, K].

    Targets that are NaN or negative (e.g. -100) are missing labels and skipped.
    ``pos_weight`` (one per label) up-weighs positives; ``label_smoothing`` moves targets toward 0.5.
    """

    def __init__(self, pos_weight: Sequence[float] | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise _config_error(f"label_smoothing: must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(list(pos_weight), dtype=torch.float32)
        )

    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        outputs, targets = _match_shapes(outputs, targets.to(outputs.dtype))
        valid = ~torch.isnan(targets) & (targets >= 0)
        clean = torch.where(valid, targets, torch.zeros_like(targets))
        if self.label_smoothing:
            clean = clean * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(outputs.dtype)
        per_entry = F.binary_cross_entropy_with_logits(outputs, clean, pos_weight=pos_weight, reduction="none")
        return _masked_mean(per_entry, valid.to(outputs.dtype))


def combine_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float] | None = None) -> Tensor:
    """Weighted sum of task losses: ``sum_k weights.get(k, 1.0) * losses[k]``.

    Raises ValueError when ``losses`` is empty or a weight names no loss (a typo would
    otherwise silently weigh nothing).
    """
    if not losses:
        raise ValueError("combine_losses needs at least one loss")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(losses))
    if unknown:
        raise ValueError(f"loss weights for unknown tasks {unknown}; tasks: {sorted(losses)}")
    total: Tensor | None = None
    for name, loss in losses.items():
        term = float(weights.get(name, 1.0)) * loss
        total = term if total is None else total + term
    assert total is not None
    return total
