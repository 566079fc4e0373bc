"""Registers the pretrained encoders: ``hf_text``, ``mobilenet_v2``, ``efficientnet_lite0``."""

from polyfuse.encoders import efficientnet, mobilenet, pretrained_text  # noqa: F401
from polyfuse.encoders.efficientnet import EfficientNetLite0, EfficientNetLite0Encoder, efficientnet_lite0_imagenet
from polyfuse.encoders.mobilenet import MobileNetV2, MobileNetV2Encoder, mobilenet_v2_imagenet
from polyfuse.encoders.pretrained_image import IMAGENET_MEAN, IMAGENET_STD, PretrainedImageEncoder
from polyfuse.encoders.pretrained_text import HFTextEncoder
from polyfuse.weights import pretrained_text_folder

__all__ = [
    "EfficientNetLite0", "EfficientNetLite0Encoder", "efficientnet_lite0_imagenet",
    "MobileNetV2", "MobileNetV2Encoder", "mobilenet_v2_imagenet",
    "IMAGENET_MEAN", "IMAGENET_STD", "PretrainedImageEncoder",
    "HFTextEncoder", "pretrained_text_folder",
]
