"""MobileNetV2 (Sandler et al. 2018) with torchvision's module names, and its ImageNet encoder.

The module tree mirrors ``torchvision.models.mobilenet_v2`` exactly (``features.0.0.weight``,
``features.1.conv.0.0.weight``, ..., ``classifier.1.weight``) so that torchvision's
``mobilenet_v2-b0353104.pth`` loads strictly without torchvision.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polyfuse.encoders.pretrained_image import (
    IMAGENET_MEAN, IMAGENET_STD, PretrainedImageEncoder, load_weights, pretrained_state,
)
from polyfuse.registry import ENCODERS
from polyfuse.weights import MOBILENET_V2_IMAGENET

#: (expansion t, output channels c, repeats n, first stride s) per stage, as in the paper.
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """conv -> batch norm -> ReLU6 (torchvision's Conv2dNormActivation: keys ``0.weight``, ``1.*``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (3x3) -> linear project (1x1), residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_residual = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_ch, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0). ``num_classes=None`` builds the feature extractor only."""

    feature_dim = 1280

    def __init__(self, num_classes: int | None = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = 32
        features: list[nn.Module] = [ConvBNReLU6(3, in_ch, stride=2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(ConvBNReLU6(in_ch, self.feature_dim, kernel_size=1))
        self.features = nn.Sequential(*features)  # 19 blocks
        self.classifier = (
            nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, num_classes)) if num_classes else None
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialization (used when no pretrained weights are loaded)."""
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
        return list(self.features)

    def forward_features(self, pixels: Tensor) -> Tensor:
        """[B,3,H,W] ImageNet-normalized -> [B,1280,H/32,W/32]."""
        return self.features(pixels)

    def forward(self, pixels: Tensor) -> Tensor:
        """[B,3,H,W] -> class logits [B,num_classes]."""
        if self.classifier is None:
            raise RuntimeError("this MobileNetV2 was built without a classifier (num_classes=None)")
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(pixels), 1), 1)
        return self.classifier(pooled)


def mobilenet_v2_imagenet(weights: str | None = None) -> MobileNetV2:
    """MobileNetV2 with its 1000-class ImageNet classifier, every key loaded strictly."""
    model = MobileNetV2(num_classes=1000)
    state = pretrained_state(MOBILENET_V2_IMAGENET, weights)
    assert state is not None
    load_weights(model, state, what="MobileNetV2")
    return model.eval()


@ENCODERS.register(
    "mobilenet_v2", modalities=("image",), pretrained=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD
)
class MobileNetV2Encoder(PretrainedImageEncoder):
    """MobileNetV2 ImageNet backbone: tokens = the 1280-channel final feature map's positions.

    ``pretrained`` loads the packaged ImageNet weights (or ``weights``: a local .pth/.safetensors
    state_dict with torchvision's key names); inputs are ImageNet-normalized RGB pixels.
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
        backbone = MobileNetV2(num_classes=None)
        state = pretrained_state(MOBILENET_V2_IMAGENET, weights, pretrained)
        if state is not None:
            load_weights(backbone, state, what="MobileNetV2", skip_prefix="classifier.")
        super().__init__(backbone, in_channels=in_channels, freeze=freeze, trainable_blocks=trainable_blocks, dim=dim)
