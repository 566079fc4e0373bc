"""Gated fusions: a gated multimodal unit and a per-modality scalar gate."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.fusion._common import (
    ModalityProjection,
    check_positive,
    masked_softmax_weights,
    normalize_weights,
    presence_matrix,
    zero_absent,
)
from polyfuse.fusion.base import Fusion
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


class _NormalizedInputs(Fusion):
    """Shared part: per-modality LayerNorm of the pooled features, absent modalities zeroed."""

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__(input_dims)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in input_dims.values())

    def normalized(self, features: dict[str, EncoderOutput], p: Tensor) -> list[Tensor]:
        return [
            zero_absent(norm(features[m].pooled), p[:, i]) for i, (norm, m) in enumerate(zip(self.norms, self.modalities))
        ]


@FUSIONS.register("gated", level="feature")
class GatedFusion(_NormalizedInputs):
    """Gated multimodal unit for any number of modalities.

    ``h_i = tanh(V_i f_i)``, ``z_i = sigmoid(sum_j W_ij f_j + b_i)``, ``fused = sum_i z_i * h_i`` over
    the present modalities (an absent modality contributes 0 to the gates and to the sum).
    ``modality_weights`` is the mean gate of each modality, normalized over the modalities.
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        dims = list(input_dims.values())
        self.value_projs = nn.ModuleList(nn.Linear(d, dim) for d in dims)  # V_i
        self.gates = nn.Linear(sum(dims), dim * len(dims))  # rows i: [W_i1 ... W_iM], bias b_i
        self.drop = nn.Dropout(dropout)
        self.dim = dim
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        f = self.normalized(features, p)
        h = torch.stack([torch.tanh(v(x)) for v, x in zip(self.value_projs, f)], dim=1)  # [B,M,D]
        z = torch.sigmoid(self.gates(torch.cat(f, dim=-1))).view(-1, len(f), self.dim)  # [B,M,D]
        z = torch.where(p.unsqueeze(-1), z, torch.zeros_like(z))
        fused = (z * h).sum(dim=1)
        return FusionOutput(
            pooled=self.drop(fused),
            modality_weights=normalize_weights(z.mean(dim=-1), p),
            modalities=self.modalities,
            extras={"gates": z},
        )


@FUSIONS.register("modality_gated", level="feature")
class ModalityGatedFusion(_NormalizedInputs):
    """One scalar gate per modality: softmax over the present modalities of scores from all features.

    ``fused = sum_i w_i * proj_i(f_i)``; ``modality_weights = w`` (a row with nothing present gets 0).
    """

    def __init__(self, input_dims: dict[str, int], dim: int = 128, hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__(input_dims)
        check_positive("dim", dim)
        check_positive("hidden", hidden)
        dims = list(input_dims.values())
        self.projs = nn.ModuleList(ModalityProjection(d, dim, activation=True) for d in dims)
        # scores see the features and which modalities are present
        self.scorer = nn.Sequential(nn.Linear(sum(dims) + len(dims), hidden), nn.GELU(), nn.Linear(hidden, len(dims)))
        self.drop = nn.Dropout(dropout)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        f = self.normalized(features, p)
        scores = self.scorer(torch.cat(f + [p.to(f[0].dtype)], dim=-1))  # [B,M]
        w = masked_softmax_weights(scores, p, empty="zeros")
        projected = torch.stack(
            [zero_absent(proj(features[m].pooled), p[:, i]) for i, (proj, m) in enumerate(zip(self.projs, self.modalities))],
            dim=1,
        )  # [B,M,D]
        fused = (w.unsqueeze(-1) * projected).sum(dim=1)
        return FusionOutput(pooled=self.drop(fused), modality_weights=w, modalities=self.modalities)
