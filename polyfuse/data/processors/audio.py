"""Audio files (WAV/FLAC/OGG or uploaded bytes) -> mono ``waveform`` float32 [S] at a fixed rate."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data import augment as aug
from polyfuse.data.processors.base import Arrays, Processor, RowContext, pad_stack, positive_int, read_file
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

#: Frames of ``augment.audio_time_mask`` are 10 ms long (the usual spectrogram hop).
MASK_FRAME_SECONDS = 0.01


@PROCESSORS.register("audio")
class AudioProcessor(Processor):
    """Audio -> ``waveform`` float32 [S] in [-1, 1], resampled to ``sample_rate``, mixed to mono.

    ``duration`` (seconds) fixes S: longer clips are cropped (centre; a random window under
    training augmentation), shorter ones zero padded; null keeps every clip's length
    (batches pad to the longest). Batches carry ``lengths`` [B] (real samples, 0 = missing).
    Training rows keep their full length until augmentation or collation crops them.
    """

    kind = "audio"

    def __init__(self, column: str, sample_rate: int = 16000, duration: float | None = 1.0) -> None:
        super().__init__()
        self.options = {"column": column, "sample_rate": sample_rate, "duration": duration}
        self.columns = [column]
        self.column = column
        self.sample_rate = int(positive_int(sample_rate, "sample_rate"))  # type: ignore[arg-type]
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0):
            raise ConfigError(f"duration: expected a positive number of seconds or null, got {duration!r}")
        self.num_samples: int | None = None if duration is None else max(1, int(round(duration * self.sample_rate)))

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        from polyfuse.data.readers import read_audio

        value = self.cell(row, self.column)
        if value is None:
            return None
        wave = read_file(value, ctx, self.column, lambda source: read_audio(source, sample_rate=self.sample_rate, mono=True))
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            raise ctx.error(f"{value}: empty audio", self.column)
        if not np.isfinite(wave).all():
            raise ctx.error(f"{value}: audio holds NaN or infinite samples", self.column)
        if self.num_samples is not None and ctx.split != "train":
            wave = aug.center_crop(wave, self.num_samples)
        return {"waveform": wave.copy()}

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        wave = arrays["waveform"]
        if self.num_samples is not None:
            wave = aug.random_crop(wave, self.num_samples, rng)
        if cfg.audio_gain_db > 0:
            wave = aug.random_gain(wave, cfg.audio_gain_db, rng)
        if cfg.audio_noise > 0:
            wave = aug.add_noise(wave, cfg.audio_noise, rng, relative=True)
        if cfg.audio_time_mask > 0:
            hop = max(1, int(round(MASK_FRAME_SECONDS * self.sample_rate)))
            wave = aug.time_mask(wave, cfg.audio_time_mask * hop, rng)
        return {"waveform": wave}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        if self.num_samples is None:
            waves, lengths = pad_stack(items, "waveform", np.float32)
            return {"waveform": waves, "lengths": lengths}
        cropped = [None if it is None else {"waveform": aug.center_crop(it["waveform"], self.num_samples)} for it in items]
        waves, lengths = pad_stack(cropped, "waveform", np.float32, min_length=self.num_samples)
        return {"waveform": waves, "lengths": lengths}

    def spec(self, name: str) -> InputSpec:
        return InputSpec(name=name, kind="audio", sample_rate=self.sample_rate, num_samples=self.num_samples)
