"""The head contract: pooled features [B, D] -> outputs [B, out_dim]."""

from __future__ import annotations

from torch import Tensor, nn


class Head(nn.Module):
    """Base class of task heads. ``forward(x [B, in_dim]) -> [B, out_dim]``."""

    in_dim: int
    out_dim: int

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
