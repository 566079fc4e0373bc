"""Fusion strategies; importing this package registers them in ``polyfuse.registry.FUSIONS``."""

from polyfuse.fusion import attention, bottleneck, decision, early, gated, pooled, tensor  # noqa: F401
from polyfuse.fusion.base import Fusion

__all__ = ["Fusion"]
