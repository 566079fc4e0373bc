"""Numpy batches -> torch tensors, and the DataLoader ``collate_fn``."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info

from polyfuse.data.pipeline import DataPipeline, Example

_ALIGN = 64  # bytes: every array of a packed batch starts on a cache line (and any dtype's alignment)


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


def to_shared_torch(batch: Any) -> Any:
    """``to_torch``, with every array of the batch copied into one shared-memory buffer (tensors are views of it).

    In a DataLoader worker, each tensor of a batch is otherwise moved to its own shared-memory segment when the
    batch is sent to the main process (a segment and a file descriptor passed per tensor); one buffer per batch
    is one segment and one descriptor, and the main process rebuilds the batch from it. Same values, dtypes and
    shapes as ``to_torch``.
    """
    arrays = [a for a in _arrays(batch) if _packable(a)]
    if not arrays:
        return to_torch(batch)
    offsets, total = [], 0
    for array in arrays:
        offsets.append(total)
        total += -(-array.nbytes // _ALIGN) * _ALIGN
    buffer = torch.empty(max(total, 1), dtype=torch.uint8).share_memory_()  # (total,) bytes
    views: dict[int, torch.Tensor] = {}
    for array, offset in zip(arrays, offsets):
        dtype = torch.from_numpy(np.empty(0, dtype=array.dtype)).dtype
        view = buffer[offset:offset + array.nbytes].view(dtype).view(array.shape)
        np.copyto(view.numpy(), array)
        views[id(array)] = view
    return _replace(batch, views)


def _arrays(batch: Any) -> list[np.ndarray]:
    if isinstance(batch, np.ndarray):
        return [batch]
    if isinstance(batch, dict):
        return [a for v in batch.values() for a in _arrays(v)]
    if isinstance(batch, (list, tuple)):
        return [a for v in batch for a in _arrays(v)]
    return []


def _packable(array: np.ndarray) -> bool:
    """A numeric/bool array of native byte order that torch can view (others take ``to_torch``'s path)."""
    return array.dtype.kind in "biuf" and array.dtype.isnative


def _replace(batch: Any, views: dict[int, torch.Tensor]) -> Any:
    if isinstance(batch, np.ndarray):
        found = views.get(id(batch))
        return found if found is not None else to_torch(batch)
    if isinstance(batch, dict):
        return {k: _replace(v, views) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_replace(v, views) for v in batch)
    return to_torch(batch)


class Collator:
    """``collate_fn`` for a DataLoader over a MultimodalDataset: Examples -> padded torch batch.

    Picklable (the pipeline is plain Python + numpy + a tokenizers object), so it works
    with ``num_workers > 0``; in a worker process a batch's tensors share one shared-memory
    buffer (``to_shared_torch``), which the main process receives as a single segment.
    """

    def __init__(self, pipeline: DataPipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        batch = self.pipeline.collate(list(examples))
        return to_shared_torch(batch) if get_worker_info() is not None else to_torch(batch)
