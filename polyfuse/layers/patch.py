"""Image patch embedding for Vision Transformers."""

from __future__ import annotations

from torch import Tensor, nn


class PatchEmbed(nn.Module):
    """Non-overlapping patches embedded by a Conv2d with stride = patch size.

    ``forward(pixels [B,C,H,W]) -> [B, (H//p)*(W//p), D]`` (row-major patch order); trailing
    pixels that do not fill a patch are dropped.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)

    def num_patches(self, height: int, width: int) -> int:
        return (height // self.patch_size) * (width // self.patch_size)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)
