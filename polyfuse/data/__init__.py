"""Data: manifests and files -> fitted, numpy-only processors -> batches.

Importing this package registers the processors and the built-in datasets and stays
torch-free; ``prepare_data``, ``MultimodalDataset``, ``Collator`` and ``to_torch``
(which need torch) load on first use.
"""

from __future__ import annotations

from typing import Any

import polyfuse.data.processors  # noqa: F401  (registers PROCESSORS)
from polyfuse.data.labels import LabelEncoder
from polyfuse.data.pipeline import DataPipeline, Example
from polyfuse.data.processors import FitContext, Processor, RowContext
from polyfuse.data.report import DataReport

try:  # the built-in datasets register themselves; the package may still be empty
    import polyfuse.data.datasets  # noqa: F401
except ImportError as _exc:  # pragma: no cover - only while that package is incomplete
    import warnings

    warnings.warn(f"polyfuse built-in datasets unavailable: {_exc}", RuntimeWarning, stacklevel=2)

_LAZY = {
    "prepare_data": "polyfuse.data.prepare",
    "PreparedData": "polyfuse.data.prepare",
    "MultimodalDataset": "polyfuse.data.dataset",
    "Collator": "polyfuse.data.collate",
    "to_torch": "polyfuse.data.collate",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polyfuse.data' has no attribute {name!r}")


__all__ = [
    "Collator", "DataPipeline", "DataReport", "Example", "FitContext", "LabelEncoder", "MultimodalDataset",
    "PreparedData", "Processor", "RowContext", "prepare_data", "to_torch",
]
