"""Attention bottleneck fusion (MBT): a few shared latent tokens are the only path between modalities."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.fusion._common import check_heads, check_positive, normalize_weights, presence_matrix
from polyfuse.fusion.base import Fusion
from polyfuse.layers.transformer import TransformerBlock
from polyfuse.registry import FUSIONS
from polyfuse.types import EncoderOutput, FusionOutput


@FUSIONS.register("bottleneck", level="attention")
class BottleneckFusion(Fusion):
    """Per-modality Transformer streams that exchange information only through ``n_bottleneck`` tokens.

    Each stream is ``[CLS_i ; tokens_i]`` with its own blocks. Layers before ``fusion_layer``
    are unimodal; in every later layer each stream attends over ``[its stream ; bottleneck]``
    and the bottleneck becomes the mean over the present modalities of their updated copies.
    ``pooled`` = Linear([mean bottleneck ; mean CLS of the present modalities]); ``tokens`` =
    the bottleneck; ``modality_weights`` = the bottleneck's attention mass on each stream in
    the last layer.
    """

    def __init__(
        self,
        input_dims: dict[str, int],
        dim: int = 128,
        heads: int = 4,
        depth: int = 2,
        fusion_layer: int = 0,
        n_bottleneck: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(input_dims)
        for name, value in (("dim", dim), ("heads", heads), ("depth", depth), ("n_bottleneck", n_bottleneck)):
            check_positive(name, value)
        check_heads(dim, heads)
        if not 0 <= fusion_layer < depth:
            raise ConfigError(f"fusion_layer: must be in 0..{depth - 1} (depth {depth}), got {fusion_layer}")
        n = len(input_dims)
        self.fusion_layer = fusion_layer
        self.in_projs = nn.ModuleList(nn.Linear(d, dim) for d in input_dims.values())
        self.cls = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.bottleneck = nn.Parameter(torch.randn(n_bottleneck, dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(n)) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(2 * dim, dim)
        self.output_dim = dim

    def forward(self, features: dict[str, EncoderOutput], present: dict[str, Tensor]) -> FusionOutput:
        p = presence_matrix(present, self.modalities)  # [B,M]
        pf = p.to(self.cls.dtype)
        count = pf.sum(dim=1)  # [B]
        batch = p.shape[0]
        streams, masks = [], []
        for i, (proj, m) in enumerate(zip(self.in_projs, self.modalities)):
            cls = self.cls[i].expand(batch, 1, -1)
            streams.append(torch.cat([cls, proj(features[m].tokens)], dim=1))  # [B, 1+T_i, D]
            masks.append(torch.cat([torch.ones_like(p[:, :1]), features[m].mask.bool() & p[:, i : i + 1]], dim=1))
        lengths = [s.shape[1] for s in streams]
        bneck = self.bottleneck.expand(batch, -1, -1)  # [B, n_b, D]
        n_b = bneck.shape[1]
        bneck_mask = torch.ones(batch, n_b, dtype=torch.bool, device=bneck.device)
        mass: list[Tensor] = []  # filled in the last layer, which is always a fusion layer
        for depth, blocks in enumerate(self.layers):
            if depth < self.fusion_layer:
                streams = [block(s, mk) for block, s, mk in zip(blocks, streams, masks)]
                continue
            last = depth == len(self.layers) - 1
            copies, new_streams, new_mass = [], [], []
            for i, block in enumerate(blocks):
                seq, seq_mask = torch.cat([streams[i], bneck], dim=1), torch.cat([masks[i], bneck_mask], dim=1)
                if last:
                    out, weights = block.forward_with_weights(seq, seq_mask)  # [B,H,N,N]
                    # attention mass of the bottleneck queries on this stream's positions
                    new_mass.append(weights[:, :, lengths[i] :, : lengths[i]].sum(dim=-1).mean(dim=(1, 2)))
                else:
                    out = block(seq, seq_mask)
                new_streams.append(out[:, : lengths[i]])
                copies.append(out[:, lengths[i] :])
            stacked = torch.stack(copies, dim=1)  # [B, M, n_b, D]
            shared = (stacked * pf[:, :, None, None]).sum(dim=1) / count.clamp(min=1)[:, None, None]
            bneck = torch.where((count > 0)[:, None, None], shared, bneck)
            streams = new_streams
            if new_mass:
                mass = new_mass
        bneck = self.norm(bneck)
        cls_out = self.norm(torch.stack([s[:, 0] for s in streams], dim=1))  # [B, M, D]
        cls_mean = (cls_out * pf.unsqueeze(-1)).sum(dim=1) / count.clamp(min=1).unsqueeze(-1)
        pooled = self.out(torch.cat([bneck.mean(dim=1), cls_mean], dim=-1))
        return FusionOutput(
            pooled=pooled,
            tokens=bneck,
            mask=bneck_mask,
            modality_weights=normalize_weights(torch.stack(mass, dim=1), p),
            modalities=self.modalities,
        )
