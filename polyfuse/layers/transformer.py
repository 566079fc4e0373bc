"""Pre-norm Transformer blocks (self- and cross-attention) and a stack of them."""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.layers.attention import MultiHeadAttention
from polyfuse.layers.mlp import FeedForward


class TransformerBlock(nn.Module):
    """Pre-norm self-attention block: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``.

    ``forward(x [B,T,D], mask [B,T] bool | None) -> [B,T,D]``; ``forward_with_weights`` also
    returns the attention weights [B,H,T,T].
    """

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward_with_weights(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.norm1(x)
        attended, weights = self.attn(h, h, h, key_mask=mask, need_weights=True)
        x = x + self.drop(attended)
        x = x + self.mlp(self.norm2(x))
        assert weights is not None
        return x, weights

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.norm1(x)
        attended, _ = self.attn(h, h, h, key_mask=mask)
        x = x + self.drop(attended)
        return x + self.mlp(self.norm2(x))


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention block: queries ``x`` attend to ``context``, then an MLP.

    ``forward(x [B,Tq,D], context [B,Tk,Dc], context_mask [B,Tk] bool | None, need_weights)
    -> (x [B,Tq,D], weights [B,H,Tq,Tk] | None)``.
    """

    def __init__(
        self, dim: int, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, context_dim: int | None = None
    ) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(context_dim)
        self.attn = MultiHeadAttention(dim, heads, dropout, kv_dim=context_dim)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_ratio, dropout)

    def forward(
        self, x: Tensor, context: Tensor, context_mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        kv = self.norm_kv(context)
        attended, weights = self.attn(self.norm_q(x), kv, kv, key_mask=context_mask, need_weights=need_weights)
        x = x + self.drop(attended)
        return x + self.mlp(self.norm2(x)), weights


class TransformerEncoder(nn.Module):
    """``depth`` pre-norm ``TransformerBlock``s and a final LayerNorm.

    ``forward(x [B,T,D], mask [B,T] bool | None) -> [B,T,D]``; ``forward_with_weights`` also
    returns each block's attention weights (a list of [B,H,T,T]).
    """

    def __init__(self, dim: int, depth: int = 2, heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def forward_with_weights(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        weights = []
        for block in self.blocks:
            x, w = block.forward_with_weights(x, mask)
            weights.append(w)
        return self.norm(x), weights
