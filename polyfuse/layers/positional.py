"""Position embeddings and a learned CLS token."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position: ``x [B,T,D] -> x + pos[:T]`` (T <= max_positions)."""

    def __init__(self, max_positions: int, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.max_positions = max_positions
        self.weight = nn.Parameter(torch.randn(max_positions, dim) * init_std)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight[: x.shape[1]].unsqueeze(0)


def sinusoidal_positions(num_positions: int, dim: int) -> Tensor:
    """Fixed sine/cosine position table [num_positions, dim] (Vaswani et al.)."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class CLSToken(nn.Module):
    """Prepends a learned token: ``x [B,T,D], mask [B,T] -> [B,1+T,D], [B,1+T]`` (CLS always valid)."""

    def __init__(self, dim: int, init_std: float = 0.02) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, dim) * init_std)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        cls = self.token.expand(x.shape[0], 1, x.shape[2])
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        valid = torch.ones(x.shape[0], 1, dtype=torch.bool, device=x.device)
        return torch.cat([cls, x], dim=1), torch.cat([valid, mask.bool()], dim=1)
