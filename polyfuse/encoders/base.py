"""The encoder contract: a batch's tensors for one input -> EncoderOutput(tokens, pooled, mask)."""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.types import EncoderOutput


class Encoder(nn.Module):
    """Base class of every encoder.

    Subclasses set ``output_dim`` (the width D of tokens and pooled) in ``__init__`` and
    implement ``forward(inputs) -> EncoderOutput`` where ``inputs`` holds the tensors of
    one input kind (see ``polyfuse.types.INPUT_KEYS``). Rows whose modality is missing
    arrive as zeros (or an all-false mask); the output for them must stay finite.
    """

    output_dim: int

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError


def masked_mean(tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean of tokens [B,T,D] over positions where mask [B,T] is true; zeros for empty rows."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # [B,T,1]
    total = (tokens * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count
