"""Feature-frame sequences (MFCC, sensor channels, ...) -> ``values`` float32 [T, F]."""

from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import pandas as pd

from polyfuse.config import AugmentConfig
from polyfuse.data import augment as aug
from polyfuse.data.processors.base import (
    INVALID, Arrays, FitContext, Processor, RowContext, is_missing, located, pad_stack, positive_int, read_file,
    sample_positions,
)
from polyfuse.errors import DataError
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

#: Training sequences read to fit the feature statistics.
FIT_SAMPLE = 2000


def inline_frames(value: Any) -> np.ndarray | None:
    """An inline sequence (list, array, or a JSON list in a string) as float32, else None (a path)."""
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise DataError(f"not a valid inline list ({exc})") from None
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            if len(value) and isinstance(value[0], (list, tuple, np.ndarray)):
                return np.stack([np.asarray(v, dtype=np.float32) for v in value])
            return np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            raise DataError(f"inline sequence is not a rectangular list of numbers ({exc})") from None
    return None


def _read_array(source: Any) -> np.ndarray:
    from polyfuse.data.readers import read_array

    return read_array(source)


@PROCESSORS.register("sequence")
class SequenceProcessor(Processor):
    """A .npy [T, F] / .csv file, or an inline list, -> ``values`` float32 [T, F] (1-D -> F = 1).

    Keeps the first ``max_length`` frames (null = all). ``normalize`` standardizes each
    feature with the mean/std of the training frames. Batches pad to the longest row
    and carry ``mask`` bool [B, T] (True = real frame).
    """

    kind = "sequence"

    def __init__(self, column: str, max_length: int | None = 400, normalize: bool = True) -> None:
        super().__init__()
        self.options = {"column": column, "max_length": max_length, "normalize": normalize}
        self.columns = [column]
        self.column = column
        self.max_length = positive_int(max_length, "max_length", allow_none=True)
        self.normalize = bool(normalize)
        self.feature_dim: int | None = None
        self.mean: list[float] | None = None
        self.std: list[float] | None = None

    def _frames(self, value: Any, ctx: RowContext | FitContext) -> np.ndarray:
        try:
            frames = inline_frames(value)
        except DataError as exc:
            raise located(exc, ctx, self.column, INVALID) from None
        if frames is None:
            frames = read_file(value, ctx, self.column, _read_array)
        frames = np.asarray(frames, dtype=np.float32)
        if frames.ndim == 1:
            frames = frames[:, None]
        problem = None
        if frames.ndim != 2:
            problem = f"expected frames [T, F], got an array of shape {tuple(frames.shape)}"
        elif frames.shape[0] == 0:
            problem = "empty sequence (no frames)"
        elif not np.isfinite(frames).all():
            problem = "sequence holds NaN or infinite values"
        elif self.feature_dim is not None and frames.shape[1] != self.feature_dim:
            problem = f"{frames.shape[1]} features per frame, expected {self.feature_dim} (as in training)"
        if problem:
            where = f"{value}: " if isinstance(value, str) and len(value) < 200 else ""
            raise located(DataError(where + problem), ctx, self.column, INVALID)
        return frames

    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        total = total_sq = None
        count = 0
        for value in frame[self.column].iloc[sample_positions(len(frame), FIT_SAMPLE)]:
            if is_missing(value):
                continue
            try:
                frames = self._frames(value, ctx)
            except DataError:
                continue  # reported when the row itself is read
            if self.feature_dim is None:
                self.feature_dim = int(frames.shape[1])
            frames = frames[: self.max_length].astype(np.float64)
            total = frames.sum(0) if total is None else total + frames.sum(0)
            total_sq = (frames**2).sum(0) if total_sq is None else total_sq + (frames**2).sum(0)
            count += len(frames)
        if self.feature_dim is None or total is None or total_sq is None:
            raise DataError("no readable sequence among the training rows", file=ctx.source, column=self.column)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        self.mean = [float(m) for m in mean]
        self.std = [float(s) if s > 1e-8 else 1.0 for s in std]

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        value = row.get(self.column) if hasattr(row, "get") else None
        if is_missing(value):
            return None
        frames = self._frames(value, ctx)[: self.max_length]
        if self.normalize and self.mean is not None and self.std is not None:
            frames = (frames - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return {"values": np.ascontiguousarray(frames, dtype=np.float32)}

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        values = arrays["values"]
        if cfg.audio_time_mask > 0:
            values = aug.time_mask(values, cfg.audio_time_mask, rng)
        if cfg.audio_freq_mask > 0:
            values = aug.feature_mask(values, cfg.audio_freq_mask, rng)
        if cfg.sequence_noise > 0:
            values = aug.add_noise(values, cfg.sequence_noise, rng)
        return {"values": values}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        values, lengths = pad_stack(items, "values", np.float32, tail=(self.feature_dim or 1,))
        mask = np.arange(values.shape[1])[None, :] < lengths[:, None]
        return {"values": values, "mask": mask}

    def spec(self, name: str) -> InputSpec:
        return InputSpec(name=name, kind="sequence", feature_dim=self.feature_dim, max_length=self.max_length)

    def state_dict(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "mean": self.mean, "std": self.std}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.feature_dim = state.get("feature_dim")
        self.mean, self.std = state.get("mean"), state.get("std")
