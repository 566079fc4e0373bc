"""Video clips (.mp4/.mov/.mkv/.webm/.avi via PyAV, .npy [F,H,W,C], animated GIF/APNG/TIFF, or a folder of
frames) -> ``frames`` [F, C, H, W]."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data.processors.base import (
    Arrays, FitContext, Processor, RowContext, is_missing, pad_stack, positive_int, read_file, sample_positions,
)
from polyfuse.data.processors.image import PixelTransform
from polyfuse.data.video_files import uniform_indices  # noqa: F401  (re-exported: sampling lives with the readers)
from polyfuse.errors import DataError
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

#: Training clips read to fit channels / size / mean / std.
FIT_SAMPLE = 32


@PROCESSORS.register("video")
class VideoProcessor(Processor):
    """A clip -> ``frames`` float32 [F, C, H, W], at most ``num_frames`` frames.

    Without ``fps``, ``num_frames`` frames are sampled evenly over the whole clip (first and
    last frame included; shorter clips keep all their frames). With ``fps`` (e.g. 2.0), the
    frames shown at 0, 1/fps, 2/fps, ... seconds from the clip's start are taken, stopping at
    the clip's end or after ``num_frames`` frames (so a long clip keeps its first
    ``num_frames / fps`` seconds; an fps above the clip's own rate repeats frames). ``fps``
    needs timed sources: video files or animations with frame durations. Batches pad to
    ``num_frames`` and carry ``frame_mask`` bool [B, F]. ``size``/``channels``/``mean``/``std``
    work as for images.
    """

    kind = "video"

    def __init__(
        self,
        column: str,
        num_frames: int = 8,
        size: list[int] | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__()
        self.options = {
            "column": column, "num_frames": num_frames, "size": size, "channels": channels, "mean": mean, "std": std,
            "fps": fps,
        }
        self.columns = [column]
        self.column = column
        self.num_frames = int(positive_int(num_frames, "num_frames"))  # type: ignore[arg-type]
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < float("inf")):
            raise ConfigError(f"fps: expected a positive number of frames per second or null, got {fps!r}")
        self.fps = None if fps is None else float(fps)
        self.transform = PixelTransform(size, False, channels, mean, std)

    def _clip(self, value: Any, ctx: RowContext | FitContext, channels: int | None) -> np.ndarray:
        from polyfuse.data.readers import read_video

        clip = read_file(
            value, ctx, self.column,
            lambda source: read_video(source, channels=channels, num_frames=self.num_frames, fps=self.fps),
        )
        clip = np.asarray(clip)
        if clip.ndim == 3:  # [F, H, W] gray
            clip = clip[..., None]
        if clip.ndim != 4 or clip.shape[0] == 0:
            raise DataError(
                f"{value}: expected frames [F, H, W, C], got shape {tuple(clip.shape)}",
                file=ctx.source, row=getattr(ctx, "row", None), column=self.column,
            )
        return clip  # [F <= num_frames, H, W, C], sampled by the reader

    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        if not self.transform.needs_fit:
            self.transform.fit([])
            return
        frames: list[np.ndarray] = []
        for value in frame[self.column].iloc[sample_positions(len(frame), FIT_SAMPLE)]:
            if is_missing(value):
                continue
            try:
                frames.extend(self._clip(value, ctx, self.transform.channels))
            except DataError:
                continue  # reported when the row itself is read
        if not frames:
            raise DataError("no readable video among the training rows", file=ctx.source, column=self.column)
        self.transform.fit(frames)

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        value = self.cell(row, self.column)
        if value is None:
            return None
        clip = self._clip(value, ctx, self.transform.channels)
        try:
            raw = np.stack([self.transform.prepare(f) for f in clip])  # [F, C, H, W]
        except DataError as exc:
            raise ctx.error(f"{value}: {exc.reason}", self.column) from None
        return {"frames": self.transform.normalize(raw)}

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        return {"frames": self.transform.augment(arrays["frames"], rng, cfg)}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        t = self.transform
        assert t.channels is not None and t.size is not None
        frames, lengths = pad_stack(items, "frames", np.float32, tail=(t.channels, *t.size), min_length=self.num_frames)
        return {"frames": frames, "frame_mask": np.arange(frames.shape[1])[None, :] < lengths[:, None]}

    def spec(self, name: str) -> InputSpec:
        t = self.transform
        assert t.size is not None
        return InputSpec(
            name=name, kind="video", channels=t.channels, height=t.size[0], width=t.size[1],
            num_frames=self.num_frames, extra={"mean": t.mean, "std": t.std},
        )

    def state_dict(self) -> dict[str, Any]:
        return self.transform.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.transform.load_state_dict(state)
