"""Helpers for tests of encoders, fusions and models: tiny input specs and valid random inputs.

``random_inputs`` follows ``polyfuse.types.INPUT_KEYS``: rows listed in ``missing_rows`` are
all zeros with an empty mask (zero attention mask / zero length / all-false mask), the way
``polyfuse.data.collate`` presents a missing modality. Text, audio, sequence and video rows have
varied lengths, padded at the end, with at least one row at full length.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from polyfuse.types import INPUT_KINDS, InputSpec

_EXAMPLES: dict[str, dict[str, object]] = {
    "image": {"channels": 3, "height": 16, "width": 16},
    "text": {"vocab_size": 50, "pad_id": 0, "max_length": 12},
    "audio": {"sample_rate": 8000, "num_samples": 2400},
    "sequence": {"feature_dim": 5, "max_length": 10},
    "tabular": {"num_numeric": 3, "cat_cardinalities": [4, 3]},
    "video": {"channels": 3, "height": 16, "width": 16, "num_frames": 3},
}


def example_spec(kind: str, name: str | None = None) -> InputSpec:
    """A tiny, valid InputSpec for an input kind (image 3x16x16, text vocab 50 / length 12, audio
    0.3 s at 8 kHz, sequence 10 frames x 5 features, tabular 3 numbers + 2 categories, video 3 frames)."""
    if kind not in _EXAMPLES:
        raise ValueError(f"unknown input kind {kind!r}; allowed: {', '.join(INPUT_KINDS)}")
    return InputSpec(name=name or kind, kind=kind, **_EXAMPLES[kind])  # type: ignore[arg-type]


def _lengths(batch_size: int, full: int, generator: torch.Generator) -> Tensor:
    """Lengths in [max(1, full//2), full], row 0 at full length (so the padded width is ``full``)."""
    low = max(1, full // 2)
    lengths = torch.randint(low, full + 1, (batch_size,), generator=generator)
    lengths[0] = full
    return lengths


def random_inputs(
    spec: InputSpec, batch_size: int, missing_rows: Iterable[int] = (), seed: int = 0
) -> dict[str, Tensor]:
    """A valid input dict for ``spec.kind`` with ``batch_size`` rows; ``missing_rows`` are absent."""
    g = torch.Generator().manual_seed(seed)
    missing = torch.zeros(batch_size, dtype=torch.bool)
    missing[list(missing_rows)] = True
    keep = (~missing).float()
    b = batch_size
    if spec.kind == "image":
        assert spec.channels and spec.height and spec.width
        pixels = torch.randn(b, spec.channels, spec.height, spec.width, generator=g)
        return {"pixels": pixels * keep[:, None, None, None]}
    if spec.kind == "text":
        assert spec.vocab_size and spec.max_length
        lengths = _lengths(b, spec.max_length, g) * (~missing)
        mask = torch.arange(spec.max_length)[None, :] < lengths[:, None]
        low = 1 if spec.pad_id == 0 else 0
        ids = torch.randint(low, spec.vocab_size, (b, spec.max_length), generator=g)
        ids = torch.where(mask, ids, torch.full_like(ids, spec.pad_id))
        return {"input_ids": ids, "attention_mask": mask.long()}
    if spec.kind == "audio":
        assert spec.sample_rate
        full = spec.num_samples or spec.sample_rate // 4
        lengths = _lengths(b, full, g) * (~missing)
        mask = torch.arange(full)[None, :] < lengths[:, None]
        waveform = torch.randn(b, full, generator=g) * 0.3 * mask
        return {"waveform": waveform, "lengths": lengths.long()}
    if spec.kind == "sequence":
        assert spec.feature_dim
        full = spec.max_length or 8
        lengths = _lengths(b, full, g) * (~missing)
        mask = torch.arange(full)[None, :] < lengths[:, None]
        values = torch.randn(b, full, spec.feature_dim, generator=g) * mask[..., None]
        return {"values": values, "mask": mask}
    if spec.kind == "tabular":
        numeric = torch.randn(b, spec.num_numeric, generator=g) * keep[:, None]
        cats = [torch.randint(0, c, (b,), generator=g) for c in spec.cat_cardinalities]
        categorical = torch.stack(cats, dim=1) if cats else torch.zeros(b, 0, dtype=torch.long)
        return {"numeric": numeric, "categorical": categorical * (~missing)[:, None]}
    if spec.kind == "video":
        assert spec.channels and spec.height and spec.width
        full = spec.num_frames or 4
        lengths = _lengths(b, full, g) * (~missing)
        mask = torch.arange(full)[None, :] < lengths[:, None]
        frames = torch.randn(b, full, spec.channels, spec.height, spec.width, generator=g)
        return {"frames": frames * mask[:, :, None, None, None], "frame_mask": mask}
    raise ValueError(f"unknown input kind {spec.kind!r}; allowed: {', '.join(INPUT_KINDS)}")


def trim_row(kind: str, inputs: dict[str, Tensor], row: int) -> dict[str, Tensor]:
    """Row ``row`` of a batch alone, cut to its own length (no padding); a batch of one."""
    one = {k: v[row : row + 1] for k, v in inputs.items()}
    if kind == "text":
        n = int(one["attention_mask"].sum())
        return {k: v[:, :n] for k, v in one.items()}
    if kind == "audio":
        n = int(one["lengths"][0])
        return {"waveform": one["waveform"][:, :n], "lengths": one["lengths"]}
    if kind == "sequence":
        n = int(one["mask"].sum())
        return {"values": one["values"][:, :n], "mask": one["mask"][:, :n]}
    if kind == "video":
        n = int(one["frame_mask"].sum())
        return {"frames": one["frames"][:, :n], "frame_mask": one["frame_mask"][:, :n]}
    return one
