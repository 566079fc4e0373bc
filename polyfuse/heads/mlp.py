"""Task heads: a Linear (or a one-hidden-layer MLP) from the fused features to the task outputs."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.heads.base import Head
from polyfuse.registry import HEADS


def _check(in_dim: int, out_dim: int, hidden: int, dropout: float) -> None:
    from polyfuse.config import ConfigError

    if in_dim < 1 or out_dim < 1:
        raise ConfigError(f"head: in_dim and out_dim must be positive, got {in_dim} and {out_dim}")
    if hidden < 0:
        raise ConfigError(f"head.hidden: must be 0 (no hidden layer) or a positive width, got {hidden}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"head.dropout: must be in [0, 1), got {dropout}")


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
    """Real-valued predictions [B, num_targets]."""


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
