"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation, fixed stem/head).

Module names follow ``efficientnet_lite_pytorch`` (lukemelas' EfficientNet-PyTorch layout:
``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_conv_head``, ``_fc``) so that the packaged
``efficientnet-lite0-57934424.pth`` loads strictly. That package imports and runs with
torch 2.13 and gives the same logits at 224x224 (tests check it), but its convolutions pad for
one fixed image size, it replaces the stem with random weights for other channel counts and it
prints while loading; here TensorFlow-style "same" padding is computed per input, so any image
size pads correctly.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polyfuse.encoders.pretrained_image import (
    IMAGENET_MEAN, IMAGENET_STD, PretrainedImageEncoder, load_weights, pretrained_state,
)
from polyfuse.registry import ENCODERS
from polyfuse.weights import EFFICIENTNET_LITE0_IMAGENET

#: (repeats, kernel, first stride, expansion, in channels, out channels) per stage of Lite0.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
#: Batch-norm settings of the TensorFlow original (PyTorch momentum = 1 - 0.99).
BN_MOMENTUM, BN_EPS = 0.01, 1e-3


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "SAME" padding (extra pixel right/bottom), computed from the input size."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(in_ch, out_ch, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pads: list[int] = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # F.pad order: left, right, top, bottom
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck: expand 1x1 -> depthwise kxk -> project 1x1 (+ stochastic-depth skip)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_ch * expand_ratio
        self.expand = expand_ratio != 1
        if self.expand:
            self._expand_conv = SamePadConv2d(in_ch, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SamePadConv2d(hidden, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor, drop_rate: float = 0.0) -> Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.use_residual:
            return out
        if self.training and drop_rate > 0:  # stochastic depth: drop the whole branch per sample
            keep = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) >= drop_rate
            out = out * keep / (1.0 - drop_rate)
        return out + x


class _Unit(nn.Module):
    """Groups stem (or head) conv + batch norm so they freeze as one feature unit; holds no parameters."""

    def __init__(self, conv: nn.Module, bn: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList([conv, bn])


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0. ``num_classes=None`` builds the feature extractor only.

    ``drop_connect_rate`` is the stochastic-depth rate of the last block (scaled linearly
    from 0 for the first), as in training the original; it acts only in train mode.
    """

    feature_dim = 1280

    def __init__(self, num_classes: int | None = 1000, dropout: float = 0.2, drop_connect_rate: float = 0.2) -> None:
        super().__init__()
        self.drop_connect_rate = drop_connect_rate
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)  # 16 blocks
        self._conv_head = SamePadConv2d(320, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self.num_classes = num_classes
        if num_classes:
            self._dropout = nn.Dropout(dropout)
            self._fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal convolutions, unit batch norms, small classifier (used without pretrained weights)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def feature_units(self) -> list[nn.Module]:
        """Stem, the 16 blocks, head: 18 units in forward order."""
        return [_Unit(self._conv_stem, self._bn0), *self._blocks, _Unit(self._conv_head, self._bn1)]

    def forward_features(self, pixels: Tensor) -> Tensor:
        """[B,3,H,W] ImageNet-normalized -> [B,1280,ceil(H/32),ceil(W/32)]."""
        x = F.relu6(self._bn0(self._conv_stem(pixels)))
        n = len(self._blocks)
        for i, block in enumerate(self._blocks):
            x = block(x, self.drop_connect_rate * i / n)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, pixels: Tensor) -> Tensor:
        """[B,3,H,W] -> class logits [B,num_classes]."""
        if not self.num_classes:
            raise RuntimeError("this EfficientNetLite0 was built without a classifier (num_classes=None)")
        pooled = self.forward_features(pixels).mean(dim=(2, 3))
        return self._fc(self._dropout(pooled))


def efficientnet_lite0_imagenet(weights: str | None = None) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its 1000-class ImageNet classifier, every key loaded strictly."""
    model = EfficientNetLite0(num_classes=1000)
    state = pretrained_state(EFFICIENTNET_LITE0_IMAGENET, weights)
    assert state is not None
    load_weights(model, state, what="EfficientNet-Lite0")
    return model.eval()


@ENCODERS.register(
    "efficientnet_lite0", modalities=("image",), pretrained=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
)
class EfficientNetLite0Encoder(PretrainedImageEncoder):
    """EfficientNet-Lite0 ImageNet backbone: tokens = the 1280-channel final feature map's positions.

    ``pretrained`` loads the packaged ImageNet weights (or ``weights``: a local .pth/.safetensors
    state_dict with the same key names); inputs are ImageNet-normalized RGB pixels.
    """

    def __init__(
        self,
        pretrained: bool = True,
        weights: str | None = None,
        freeze: bool = False,
        trainable_blocks: int | None = None,
        dim: int | None = None,
        in_channels: int = 3,
    ) -> None:
        backbone = EfficientNetLite0(num_classes=None)
        state = pretrained_state(EFFICIENTNET_LITE0_IMAGENET, weights, pretrained)
        if state is not None:
            load_weights(backbone, state, what="EfficientNet-Lite0", skip_prefix="_fc.")
        super().__init__(backbone, in_channels=in_channels, freeze=freeze, trainable_blocks=trainable_blocks, dim=dim)
