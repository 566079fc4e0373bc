"""Images (PNG/JPEG/... files, uploaded bytes, or .npy arrays) -> normalized ``pixels`` float32 [C, H, W]."""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np
import pandas as pd
from PIL import Image

from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data import augment as aug
from polyfuse.data.processors.base import (
    Arrays, FitContext, Processor, RowContext, as_floats, as_int_pair, is_missing, positive_int,
    read_file, sample_positions, stack_or_zeros,
)
from polyfuse.errors import DataError
from polyfuse.registry import PROCESSORS
from polyfuse.types import InputSpec

#: Training images read to fit channels / size / mean / std.
FIT_SAMPLE = 256


def match_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """[H, W, C] -> [H, W, channels]: gray <-> RGB, alpha dropped."""
    have = image.shape[-1]
    if have == channels:
        return image
    if have in (2, 4):  # gray + alpha, RGBA
        image, have = image[..., : have - 1], have - 1
        if have == channels:
            return image
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=-1)
    if channels == 1 and have == 3:
        gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        return (gray.round().astype(np.uint8) if image.dtype == np.uint8 else gray)[..., None]
    raise DataError(f"image has {have} channels, expected {channels}")


def center_crop_to_aspect(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Largest centred region of [H, W, C] with the aspect ratio of ``size``."""
    from polyfuse.data.readers import crop_box

    top, left, bottom, right = crop_box(image.shape[0], image.shape[1], size)
    return image[top:bottom, left:right]


def resize_hwc(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (antialiased) resize of [H, W, C] to ``size`` = (H, W); uint8 stays uint8."""
    if image.shape[:2] == tuple(size):
        return image
    height, width = size
    if image.dtype == np.uint8 and image.shape[-1] in (1, 3):
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        out = np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR))
        return out[..., None] if out.ndim == 2 else out
    return aug.resize_chw(image.transpose(2, 0, 1).astype(np.float32), size).transpose(1, 2, 0)


class PixelTransform:
    """Channels, size (crop + resize) and per-channel normalization shared by image and video frames."""

    def __init__(self, size: Any, crop: bool, channels: Any, mean: Any, std: Any) -> None:
        self.size = as_int_pair(size, "size")
        self.crop = bool(crop)
        if channels is not None and channels not in (1, 3):
            raise ConfigError(f"channels: {channels!r} is not allowed; allowed: 1, 3, null (fitted)")
        self.channels: int | None = channels
        self.mean = as_floats(mean, "mean")
        self.std = as_floats(std, "std")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ConfigError(f"std: every value must be positive, got {std!r}")

    @property
    def needs_fit(self) -> bool:
        return self.size is None or self.channels is None or self.mean is None or self.std is None

    def fit(self, images: list[np.ndarray]) -> None:
        """Fill what the options left open from decoded training images [H, W, C]."""
        if self.channels is None:
            self.channels = 1 if all(img.shape[-1] == 1 for img in images) else 3
        if self.size is None:
            self.size = Counter(tuple(int(v) for v in img.shape[:2]) for img in images).most_common(1)[0][0]
        if self.mean is None or self.std is None:
            total = np.zeros(self.channels)
            total_sq = np.zeros(self.channels)
            count = 0
            for img in images:
                raw = self.prepare(img).astype(np.float64)  # [C, H, W]
                total += raw.sum(axis=(1, 2))
                total_sq += (raw**2).sum(axis=(1, 2))
                count += raw.shape[1] * raw.shape[2]
            mean = total / count
            std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
            if self.mean is None:
                self.mean = [float(m) for m in mean]
            if self.std is None:
                self.std = [float(s) if s > 1e-6 else 1.0 for s in std]
        self._check_stats()

    def _check_stats(self) -> None:
        assert self.channels is not None and self.mean is not None and self.std is not None
        for option in ("mean", "std"):
            values = getattr(self, option)
            if len(values) == 1 and self.channels > 1:
                setattr(self, option, values * self.channels)
            elif len(values) != self.channels:
                raise ConfigError(f"{option}: {len(values)} values for {self.channels} channels; give one per channel")

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """[H, W, C] decoded (uint8 or float) -> float32 [C, H, W] in pixel units (uint8 / 255)."""
        assert self.channels is not None and self.size is not None
        image = match_channels(image, self.channels)
        if self.crop:
            image = center_crop_to_aspect(image, self.size)
        image = resize_hwc(image, self.size)
        raw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # C-ordered: faster arithmetic
        if image.dtype == np.uint8:
            raw *= 1.0 / 255.0  # in float32, as ``astype(float32) * (1 / 255)``
        return raw

    def _stats(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        key = (ndim, tuple(self.mean or ()), tuple(self.std or ()))
        cache = self.__dict__.setdefault("_stats_cache", {})  # one entry per (ndim, mean, std) in use
        if key not in cache:
            shape = (-1, 1, 1) if ndim == 3 else (1, -1, 1, 1)
            if len(cache) >= 4:
                cache.clear()
            cache[key] = np.asarray(self.mean, np.float32).reshape(shape), np.asarray(self.std, np.float32).reshape(shape)
        return cache[key]

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """[C, H, W] or [F, C, H, W] pixel units -> normalized float32."""
        mean, std = self._stats(raw.ndim)
        if raw.dtype != np.float32:
            return ((raw - mean) / std).astype(np.float32)
        out = raw - mean  # float32 throughout: the same values, one array fewer
        np.divide(out, std, out=out)
        return out

    def denormalize(self, values: np.ndarray) -> np.ndarray:
        mean, std = self._stats(values.ndim)
        return values * std + mean

    def augment(self, values: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
        """Random crop / flip / jitter of [C, H, W] or [F, C, H, W] (the same draw for every frame)."""
        if not (cfg.image_crop > 0 or cfg.image_flip or cfg.image_jitter > 0):
            return values
        shape = values.shape
        raw = self.denormalize(values).reshape(-1, *shape[-2:])  # [F*C, H, W]
        if cfg.image_crop > 0:
            raw = aug.random_resized_crop(raw, min(cfg.image_crop, 1.0), rng)
        if cfg.image_flip:
            raw = aug.horizontal_flip(raw, rng)
        raw = raw.reshape(shape)
        if cfg.image_jitter > 0:
            seed = int(rng.integers(2**63))
            frames = raw if raw.ndim == 4 else raw[None]
            frames = np.stack([aug.color_jitter(f, cfg.image_jitter, np.random.default_rng(seed)) for f in frames])
            raw = frames if raw.ndim == 4 else frames[0]
        return self.normalize(raw)

    def state_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels, "size": list(self.size) if self.size else None,
            "mean": self.mean, "std": self.std, "crop": self.crop,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.channels = state["channels"]
        self.size = tuple(state["size"]) if state.get("size") else None  # type: ignore[assignment]
        self.mean, self.std = state["mean"], state["std"]
        self.crop = bool(state.get("crop", self.crop))


@PROCESSORS.register("image")
class ImageProcessor(Processor):
    """Image files (or uploaded bytes, or .npy arrays) -> normalized ``pixels`` float32 [C, H, W].

    ``size`` [H, W] resizes (after a centred crop to that aspect ratio when ``crop``);
    null = the most common size among the training images. ``channels`` null = 1 when
    the training images are grayscale, else 3. ``mean``/``std`` null = fitted on a sample
    of training images (in pixel units: 8-bit values / 255).
    """

    kind = "image"

    def __init__(
        self,
        column: str,
        size: list[int] | None = None,
        crop: bool = False,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__()
        self.options = {
            "column": column, "size": size, "crop": crop, "channels": channels,
            "mean": mean, "std": std, "max_pixels": max_pixels,
        }
        self.columns = [column]
        self.column = column
        self.max_pixels = positive_int(max_pixels, "max_pixels", allow_none=True)
        self.transform = PixelTransform(size, crop, channels, mean, std)

    def _read(self, value: Any, ctx: RowContext | FitContext, channels: int | None) -> np.ndarray:
        from polyfuse.data.readers import read_image

        kwargs: dict[str, Any] = {"channels": channels}
        if self.max_pixels is not None:
            kwargs["max_pixels"] = self.max_pixels
        if self.transform.size is not None and channels is not None:  # 8-bit files resized while still Pillow images
            kwargs["size"], kwargs["crop"] = self.transform.size, self.transform.crop
        return read_file(value, ctx, self.column, lambda source: read_image(source, **kwargs))

    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        if not self.transform.needs_fit:
            self.transform.fit([])
            return
        images = []
        for value in frame[self.column].iloc[sample_positions(len(frame), FIT_SAMPLE)]:
            if is_missing(value):
                continue
            try:
                images.append(self._read(value, ctx, self.transform.channels))
            except DataError:
                continue  # reported when the row itself is read
        if not images:
            raise DataError("no readable image among the training rows", file=ctx.source, column=self.column)
        self.transform.fit(images)

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        value = self.cell(row, self.column)
        if value is None:
            return None
        image = self._read(value, ctx, self.transform.channels)
        try:
            raw = self.transform.prepare(image)
        except DataError as exc:
            raise ctx.error(f"{value}: {exc.reason}", self.column) from None
        return {"pixels": self.transform.normalize(raw)}

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        return {**arrays, "pixels": self.transform.augment(arrays["pixels"], rng, cfg)}

    def collate(self, items: list[Arrays | None]) -> Arrays:
        t = self.transform
        assert t.channels is not None and t.size is not None
        return {"pixels": stack_or_zeros(items, "pixels", (t.channels, *t.size), np.float32)}

    def spec(self, name: str) -> InputSpec:
        t = self.transform
        assert t.size is not None
        return InputSpec(
            name=name, kind="image", channels=t.channels, height=t.size[0], width=t.size[1],
            extra={"mean": t.mean, "std": t.std},
        )

    def state_dict(self) -> dict[str, Any]:
        return self.transform.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.transform.load_state_dict(state)
