"""Video encoder: a registered image encoder applied to every frame, then a temporal model.

Input: ``frames`` float [B,F,C,H,W], ``frame_mask`` bool [B,F] (True = real frame). Tokens are
frames (the frame encoder's pooled feature, after the temporal model), zero at masked frames.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import choice, divisible, positive
from polyfuse.encoders.base import Encoder
from polyfuse.layers import LearnedPositionalEmbedding, TransformerEncoder
from polyfuse.layers.pooling import masked_mean, zero_masked
from polyfuse.registry import ENCODERS, call_with
from polyfuse.types import EncoderOutput


@ENCODERS.register("video_frames", modalities=("video",))
class VideoFramesEncoder(Encoder):
    """Per-frame image encoder (``frame_encoder``: any registered image encoder, built with the
    same injected ``dim``/``in_channels``/``image_size`` plus ``frame_encoder_params``), frames
    folded into the batch; ``temporal="mean"`` (masked mean) or ``"transformer"`` (learned frame
    positions + pre-norm blocks, then masked mean)."""

    def __init__(
        self,
        dim: int = 128,
        in_channels: int = 3,
        image_size: tuple[int, int] | None = None,
        num_frames: int | None = None,
        frame_encoder: str = "cnn",
        frame_encoder_params: dict[str, Any] | None = None,
        temporal: str = "mean",
        depth: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        max_frames: int = 64,
    ) -> None:
        super().__init__()
        image_encoders = [n for n in ENCODERS.names(modality="image")]
        choice("video_frames", "frame_encoder", frame_encoder, image_encoders)
        self.temporal = choice("video_frames", "temporal", temporal, ("mean", "transformer"))
        params = dict(frame_encoder_params or {})
        injected = {"dim": dim, "in_channels": in_channels, "image_size": image_size}
        clash = sorted(set(params) & {"in_channels", "image_size"})
        if clash:
            raise ConfigError(f"frame_encoder_params.{clash[0]}: set by polyfuse from the data; remove it")
        self.frame_encoder: Encoder = call_with(ENCODERS.get(frame_encoder).factory, injected, params)
        width = self.frame_encoder.output_dim
        if self.temporal == "transformer":
            positive("video_frames", depth=depth, heads=heads)
            divisible("video_frames", width, heads)
            self.positions = LearnedPositionalEmbedding(num_frames or max_frames, width)
            self.drop = nn.Dropout(dropout)
            self.encoder = TransformerEncoder(width, depth, heads, dropout=dropout)
        self.output_dim = width

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        frames, mask = inputs["frames"], inputs["frame_mask"].bool()
        b, f = frames.shape[:2]
        per_frame = self.frame_encoder({"pixels": frames.flatten(0, 1)}).pooled  # [B*F, D]
        tokens = zero_masked(per_frame.reshape(b, f, -1), mask)  # [B,F,D]
        if self.temporal == "transformer":
            tokens = zero_masked(self.encoder(self.drop(self.positions(tokens)), mask), mask)
        return EncoderOutput(tokens=tokens, pooled=masked_mean(tokens, mask), mask=mask)
