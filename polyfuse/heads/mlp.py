"""Task heads: a Linear (or a one-hidden-layer MLP) from the fused features to the task outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.heads.base import Head
from polyfuse.registry import HEADS


def _check(in_dim: int, out_dim: int, hidden: int, dropout: float) -> None:
    from polyfuse.config import ConfigError

    if in_dim < 1 or out_dim < 1:
        raise ConfigError(f"in_dim and out_dim must be positive, got {in_dim} and {out_dim}")
    if hidden < 0:
        raise ConfigError(f"hidden: must be 0 (no hidden layer) or a positive width, got {hidden}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout: must be in [0, 1), got {dropout}")


class MLPHead(Head):
    """``Dropout -> Linear`` or, with ``hidden > 0``, ``Linear -> GELU -> Dropout -> Linear``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        _check(in_dim, out_dim, hidden, dropout)
        self.in_dim, self.out_dim = in_dim, out_dim
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@HEADS.register("classification", task="classification")
class ClassificationHead(MLPHead):
    """Class logits [B, num_classes] (softmax / cross-entropy outside)."""


@HEADS.register("regression", task="regression")
class RegressionHead(MLPHead):
    """Real-valued predictions [B, num_targets], in the targets' units.

    The layers predict standardized values; ``target_mean`` / ``target_std`` (fitted on the
    training labels by the trainer, saved with the weights) map them back, so the head starts at
    the training mean and learns at the same pace whatever the targets' scale.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__(in_dim, out_dim, hidden, dropout)
        self.register_buffer("target_mean", torch.zeros(out_dim))
        self.register_buffer("target_std", torch.ones(out_dim))

    def fit_targets(self, targets: Tensor) -> None:
        """Mean / std of the training targets [N] or [N, K] (NaN = missing label)."""
        values = targets.double().reshape(targets.shape[0], -1)
        for k in range(values.shape[1]):
            column = values[:, k][~torch.isnan(values[:, k])]
            if len(column) > 1:
                self.target_mean[k] = column.mean()
                self.target_std[k] = column.std(unbiased=False).clamp(min=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x) * self.target_std + self.target_mean


@HEADS.register("multilabel", task="multilabel")
class MultilabelHead(MLPHead):
    """Independent per-label logits [B, num_labels] (sigmoid / BCE outside)."""


@HEADS.register("projection", task="embedding")
class ProjectionHead(MLPHead):
    """Projection into an embedding space [B, out_dim]; L2-normalized when ``normalize``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0, normalize: bool = True) -> None:
        super().__init__(in_dim, out_dim, hidden, dropout)
        self.normalize = bool(normalize)

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        return F.normalize(out, dim=-1) if self.normalize else out
