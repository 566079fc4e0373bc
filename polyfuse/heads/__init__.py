"""Task heads; importing this package registers them in ``polyfuse.registry.HEADS``."""

from polyfuse.heads.base import Head
from polyfuse.heads.mlp import ClassificationHead, MLPHead, MultilabelHead, ProjectionHead, RegressionHead

__all__ = ["ClassificationHead", "Head", "MLPHead", "MultilabelHead", "ProjectionHead", "RegressionHead"]
