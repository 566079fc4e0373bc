"""Early fusion: low-level features of every modality concatenated into one shared deep encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.fusion._common import check_positive, presence_matrix, zero_absent
from polyfuse.fusion.base import Fusion
from polyfuse.layers.mlp import MLP
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


@FUSIONS.register("early", level="early")
class EarlyFusion(Fusion):
    """Concatenate the pooled low-level features (absent -> 0, plus presence flags); one MLP trunk.

    Meant for shallow encoders (``flatten``, ``sequence_stats``, ``bag_of_embeddings``) so that the
    shared trunk (``depth`` hidden layers of width ``hidden``) does the representation learning.
    ``normalize`` applies a per-modality LayerNorm before concatenation (different scales).
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 128,
        hidden: int = 256,
        depth: int = 2,
        dropout: float = 0.1,
        normalize: bool = True,
    ) -> None:
        super().__init__(input_dims)
        for name, value in (("dim", dim), ("hidden", hidden), ("depth", depth)):
            check_positive(name, value)
        dims = list(input_dims.values())
        self.norms = nn.ModuleList(nn.LayerNorm(d) if normalize else nn.Identity() for d in dims)
        self.trunk = MLP(sum(dims) + len(dims), dim, hidden=hidden, layers=depth + 1, dropout=dropout)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        parts = [
            zero_absent(norm(features[m].pooled), p[:, i]) for i, (norm, m) in enumerate(zip(self.norms, self.modalities))
        ]
        x = torch.cat(parts + [p.to(parts[0].dtype)], dim=-1)  # [B, sum D_i + M]
        return FusionOutput(pooled=self.trunk(x), modalities=self.modalities)
