"""Deployment: ONNX export, a torch-free ONNX predictor, int8 quantization, pruning, inference benchmarks.

Imports are lazy so that ``from polyfuse.deploy import OnnxPredictor`` never loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "OnnxPredictor": "polyfuse.deploy.onnx_predictor",
    "export_checkpoint": "polyfuse.deploy.export",
    "export_model": "polyfuse.deploy.export",
    "ExportError": "polyfuse.deploy.export",
    "quantize_checkpoint": "polyfuse.deploy.quantize",
    "quantize_torch": "polyfuse.deploy.quantize",
    "quantize_onnx": "polyfuse.deploy.quantize",
    "prune_checkpoint": "polyfuse.deploy.prune",
    "prune_model": "polyfuse.deploy.prune",
    "sparsity": "polyfuse.deploy.prune",
    "benchmark_checkpoint": "polyfuse.deploy.bench",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polyfuse.deploy' has no attribute {name!r}")


__all__ = sorted(_LAZY)
