"""Numpy batches -> torch tensors, and the DataLoader ``collate_fn``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from polyfuse.data.pipeline import DataPipeline, Example


def to_torch(batch: Any) -> Any:
    """Convert every numpy array of a (nested) batch to a tensor: float32, int64 and bool kept."""
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(batch))
    if isinstance(batch, np.generic):
        return torch.as_tensor(batch.item())
    if isinstance(batch, dict):
        return {k: to_torch(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_torch(v) for v in batch)
    return batch


class Collator:
    """``collate_fn`` for a DataLoader over a MultimodalDataset: Examples -> padded torch batch.

    Picklable (the pipeline is plain Python + numpy + a tokenizers object), so it works
    with ``num_workers > 0``.
    """

    def __init__(self, pipeline: DataPipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        return to_torch(self.pipeline.collate(list(examples)))
