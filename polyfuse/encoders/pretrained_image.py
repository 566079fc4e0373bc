"""Shared part of the pretrained image encoders: weights, channel adaptation, freezing, tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders.base import Encoder
from polyfuse.types import EncoderOutput
from polyfuse.weights import PackagedFile, read_state_dict

#: ImageNet statistics of RGB pixels in [0, 1]; the pretrained image encoders expect inputs normalized with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageBackbone(Protocol):
    """What a pretrained CNN offers the encoder."""

    feature_dim: int  # channels of the final feature map

    def forward_features(self, pixels: Tensor) -> Tensor:  # [B,3,H,W] -> [B,feature_dim,h,w]
        ...

    def feature_units(self) -> list[nn.Module]:  # the feature blocks in forward order
        ...


def load_weights(model: nn.Module, state: dict[str, Tensor], *, what: str, skip_prefix: str | None = None) -> None:
    """Strictly load ``state`` into ``model``; keys under ``skip_prefix`` (a classifier the model lacks) are dropped."""
    if skip_prefix is not None:
        state = {k: v for k, v in state.items() if not k.startswith(skip_prefix)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing / unexpected keys, or shapes that differ
        detail = str(exc).replace("\n", " ")
        raise ConfigError(f"weights: the file does not fit {what}: {detail[:600]}") from None


def pretrained_state(
    source: PackagedFile, weights: str | Path | None, pretrained: bool = True
) -> dict[str, Tensor] | None:
    """The user's weights file when given, else the packaged ImageNet weights; None when not pretrained."""
    if weights is not None and not pretrained:
        raise ConfigError(
            "weights: a weights file is loaded only with pretrained: true; remove weights or set pretrained: true"
        )
    if not pretrained:
        return None
    path = Path(weights) if weights is not None else source.locate()
    return read_state_dict(path, what="weights")


class PretrainedImageEncoder(Encoder):
    """A pretrained CNN's final feature map as tokens [B, h*w, D]; pooled = their mean.

    ``freeze`` fixes every backbone weight; ``trainable_blocks=N`` fixes all but the last N
    feature blocks. Fixed blocks stay in eval mode (batch-norm statistics and dropout frozen).
    One-channel inputs are repeated to RGB. ``dim`` adds a linear projection (None = backbone width).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        in_channels: int = 3,
        freeze: bool = False,
        trainable_blocks: int | None = None,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ConfigError(
                f"in_channels: pretrained image encoders read RGB (3) or grayscale (1) images, got {in_channels}; "
                "set the image input's channels to 3"
            )
        self.backbone = backbone
        self.in_channels = in_channels
        units = backbone.feature_units()
        if freeze and trainable_blocks:
            raise ConfigError("freeze: true fixes every block; do not also set trainable_blocks")
        if trainable_blocks is not None and not 0 <= trainable_blocks <= len(units):
            raise ConfigError(f"trainable_blocks: must be between 0 and {len(units)}, got {trainable_blocks}")
        trainable = 0 if freeze else (len(units) if trainable_blocks is None else trainable_blocks)
        self.num_units = len(units)
        self.frozen_units = len(units) - trainable
        for unit in units[: self.frozen_units]:
            unit.requires_grad_(False)
        width = int(backbone.feature_dim)
        self.proj = nn.Linear(width, dim) if dim is not None else nn.Identity()
        self.output_dim = dim if dim is not None else width
        self.train(True)

    def train(self, mode: bool = True) -> "PretrainedImageEncoder":
        super().train(mode)
        if self.frozen_units == self.num_units:
            self.backbone.eval()
        for unit in self.backbone.feature_units()[: self.frozen_units]:
            unit.eval()
        return self

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        pixels = inputs["pixels"]  # [B,C,H,W]
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if self.frozen_units == self.num_units:
            with torch.no_grad():
                features = self.backbone.forward_features(pixels)
        else:
            features = self.backbone.forward_features(pixels)  # [B,D,h,w]
        tokens = self.proj(features.flatten(2).transpose(1, 2))  # [B,h*w,output_dim]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, pooled=tokens.mean(dim=1), mask=mask)
