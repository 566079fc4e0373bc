"""Image encoders trained from scratch: LeNet, a small conv net, a Vision Transformer, raw pixels.

Input: ``pixels`` float [B,C,H,W]. Tokens are feature-map positions (row-major) or patches.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.encoders._checks import choice, divisible, positive, required
from polyfuse.encoders.base import Encoder
from polyfuse.layers import CLSToken, LearnedPositionalEmbedding, PatchEmbed, TransformerEncoder
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput


def _all_valid(tokens: Tensor) -> Tensor:
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


def _grid_tokens(feature_map: Tensor) -> Tensor:
    """[B,C,h,w] -> [B,h*w,C]."""
    return feature_map.flatten(2).transpose(1, 2)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _grid_pool(feature_size: tuple[int, int] | None, grid: tuple[int, int]) -> nn.Module:
    """Average pooling of a [B,C,h,w] map to ``grid``: fixed kernels when the sizes divide (ONNX
    friendly), adaptive pooling otherwise (unknown or non-dividing sizes)."""
    if feature_size is None or feature_size[0] % grid[0] or feature_size[1] % grid[1]:
        return nn.AdaptiveAvgPool2d(grid)
    kernel = (feature_size[0] // grid[0], feature_size[1] // grid[1])
    return nn.Identity() if kernel == (1, 1) else nn.AvgPool2d(kernel)


@ENCODERS.register("lenet", modalities=("image",))
class LeNetEncoder(Encoder):
    """LeNet-5-style CNN for small images (28x28 digits): two 5x5 conv + max-pool stages, then
    two fully connected layers.

    The feature map (H/4 x W/4) is average-pooled to ``token_grid`` x ``token_grid``; by default
    each side is the largest divisor of the map's side up to 7 (a 28x28 digit keeps its 7x7 map,
    64x64 gives 4x4), so the pooling is a fixed-size AvgPool that exports to ONNX. Token p is position p's share of the first
    fully connected layer (a position-specific projection of its features), so the tokens sum
    to that layer's input-dependent part: ``pooled = fc2(relu(sum_p token_p + b1))``. Tokens and
    pooled share every weight.
    """

    def __init__(
        self,
        dim: int = 128,
        in_channels: int = 1,
        image_size: tuple[int, int] | None = None,
        channels: tuple[int, int] = (16, 32),
        token_grid: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        positive("lenet", dim=dim, in_channels=in_channels)
        if len(channels) != 2 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(f"channels: expected two positive widths such as [16, 32], got {channels!r}")
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )
        fmap_size = None if image_size is None else (image_size[0] // 4, image_size[1] // 4)
        if fmap_size is not None and min(fmap_size) < 1:
            raise ConfigError(f"image_size {tuple(image_size)} is too small for lenet (at least 4x4)")  # type: ignore[arg-type]
        if token_grid is None:
            grid = (7, 7) if fmap_size is None else (_largest_divisor(fmap_size[0], 7), _largest_divisor(fmap_size[1], 7))
        else:
            positive("lenet", token_grid=token_grid)
            grid = (token_grid, token_grid)
        self.pool = _grid_pool(fmap_size, grid)
        positions = grid[0] * grid[1]
        fc1 = nn.Linear(c2 * positions, dim)  # initialised like a Linear layer, stored per position
        self.fc1_weight = nn.Parameter(fc1.weight.detach().view(dim, c2, positions).permute(2, 1, 0).contiguous())
        self.fc1_bias = nn.Parameter(fc1.bias.detach().clone())  # [D]
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        fmap = self.pool(self.features(inputs["pixels"]))  # [B,C,g,g]
        per_position = fmap.flatten(2).permute(2, 0, 1)  # [P,B,C]
        tokens = torch.matmul(per_position, self.fc1_weight).transpose(0, 1)  # [B,P,D]
        pooled = self.head(tokens.sum(dim=1) + self.fc1_bias)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=_all_valid(tokens))


@ENCODERS.register("cnn", modalities=("image",))
class ConvEncoder(Encoder):
    """Conv net for larger images (e.g. 64x64 RGB): per stage two 3x3 conv-BN-ReLU, then 2x2 max-pool.

    Tokens are the final feature-map positions projected to ``dim``; ``pooled`` is their mean.
    """

    def __init__(
        self,
        dim: int = 128,
        in_channels: int = 3,
        image_size: tuple[int, int] | None = None,
        channels: tuple[int, ...] = (32, 64, 128),
        convs_per_stage: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        positive("cnn", dim=dim, in_channels=in_channels, convs_per_stage=convs_per_stage)
        if not channels:
            raise ConfigError("channels: expected at least one stage width")
        if image_size is not None and min(image_size) < 2 ** len(channels):
            raise ConfigError(
                f"channels: {len(channels)} stages halve the image {len(channels)} times; "
                f"image_size {tuple(image_size)} is too small (use fewer stages or larger images)"
            )
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            for _ in range(convs_per_stage):
                layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                width = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.token_proj = nn.Linear(width, dim)
        self.norm = nn.LayerNorm(dim)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        tokens = self.token_proj(self.drop(_grid_tokens(self.features(inputs["pixels"]))))  # [B,h*w,D]
        return EncoderOutput(tokens=tokens, pooled=self.norm(tokens.mean(dim=1)), mask=_all_valid(tokens))


@ENCODERS.register("vit", modalities=("image",))
class ViTEncoder(Encoder):
    """Vision Transformer: Conv2d patch embedding, learned positions, pre-norm blocks.

    ``pool="cls"`` reads a learned CLS token; ``"mean"`` averages the patch tokens. Tokens are the
    patches (CLS excluded).
    """

    def __init__(
        self,
        dim: int = 128,
        in_channels: int = 3,
        image_size: tuple[int, int] | None = None,
        patch_size: int = 4,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        pool: str = "cls",
    ) -> None:
        super().__init__()
        required("vit", image_size=image_size)
        assert image_size is not None
        positive("vit", dim=dim, in_channels=in_channels, patch_size=patch_size, depth=depth, heads=heads)
        divisible("vit", dim, heads)
        self.pool = choice("vit", "pool", pool, ("cls", "mean"))
        if min(image_size) < patch_size:
            raise ConfigError(f"patch_size: {patch_size} is larger than the image {tuple(image_size)}")
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        n_patches = self.patch_embed.num_patches(*image_size)
        self.cls = CLSToken(dim)
        self.positions = LearnedPositionalEmbedding(n_patches + 1, dim)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(dim, depth, heads, mlp_ratio, dropout)
        self.output_dim = dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        patches = self.patch_embed(inputs["pixels"])  # [B,N,D]
        x, _ = self.cls(patches)
        x = self.encoder(self.drop(self.positions(x)))  # [B,1+N,D]
        tokens = x[:, 1:]
        pooled = x[:, 0] if self.pool == "cls" else tokens.mean(dim=1)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=_all_valid(tokens))


@ENCODERS.register("flatten", modalities=("image",))
class FlattenEncoder(Encoder):
    """Raw pixels for early fusion: optional ``downsample`` average pooling, flatten, Linear to ``dim``.

    ``project=False`` returns the flattened pixels themselves (output_dim = C*H*W after downsampling).
    One token per image.
    """

    def __init__(
        self,
        dim: int = 128,
        in_channels: int = 1,
        image_size: tuple[int, int] | None = None,
        downsample: int = 1,
        project: bool = True,
    ) -> None:
        super().__init__()
        required("flatten", image_size=image_size)
        assert image_size is not None
        positive("flatten", dim=dim, in_channels=in_channels, downsample=downsample)
        self.downsample = nn.AvgPool2d(downsample) if downsample > 1 else nn.Identity()
        raw_dim = in_channels * (image_size[0] // downsample) * (image_size[1] // downsample)
        if raw_dim < 1:
            raise ConfigError(f"downsample: {downsample} leaves no pixels of a {tuple(image_size)} image")
        self.proj = nn.Linear(raw_dim, dim) if project else nn.Identity()
        self.output_dim = dim if project else raw_dim

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        pooled = self.proj(self.downsample(inputs["pixels"]).flatten(1))  # [B,D]
        tokens = pooled.unsqueeze(1)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=_all_valid(tokens))
