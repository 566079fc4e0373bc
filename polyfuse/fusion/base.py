"""The fusion contract: encoder outputs + present masks -> FusionOutput."""

from __future__ import annotations

from torch import Tensor, nn

from polyfuse.types import EncoderOutput, FusionOutput


class Fusion(nn.Module):
    """Base class of every fusion.

    ``input_dims`` maps input name -> encoder output width, in a fixed order that
    ``self.modalities`` keeps. ``forward(features, present)`` receives every input's
    EncoderOutput and a BoolTensor [B] per input (False = missing for that row) and returns
    a FusionOutput whose ``pooled`` has width ``self.output_dim``. A missing modality must
    not influence the result for that row, and a row with every modality missing must
    still give finite outputs.
    """

    output_dim: int

    def __init__(self, input_dims: dict[str, int]) -> None:
        super().__init__()
        if not input_dims:
            raise ValueError("a fusion needs at least one input")
        self.modalities: tuple[str, ...] = tuple(input_dims)
        self.input_dims = dict(input_dims)

    def forward(
        self, features: dict[str, EncoderOutput], present: dict[str, Tensor]
    ) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError
