"""Task heads; importing this package registers them in ``polyfuse.registry.HEADS``."""

from polyfuse.heads.base import Head
from polyfuse.heads.decoder import CaptionDecoder
from polyfuse.heads.mlp import ClassificationHead, MLPHead, MultilabelHead, ProjectionHead, RegressionHead

__all__ = ["CaptionDecoder", "ClassificationHead", "Head", "MLPHead", "MultilabelHead", "ProjectionHead", "RegressionHead"]
