"""Training-time augmentations as numpy functions: every random choice comes from the ``rng`` passed in.

Processors call these from their ``augment`` method; the dataset seeds ``rng`` by
(seed, epoch, row) so that the same seed gives the same augmentation. Each function
returns a new array and leaves its input untouched (the input may be a cached row).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image


# --------------------------------------------------------------------------- images [C, H, W]


def resize_chw(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float image [C, H, W] to [C, *size] (Pillow, per channel)."""
    height, width = size
    if image.shape[1:] == (height, width):
        return image.astype(np.float32, copy=True)
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(c, dtype=np.float32)).resize((width, height), Image.Resampling.BILINEAR))
        for c in image
    ]
    return np.stack(channels).astype(np.float32)


def random_resized_crop(image: np.ndarray, min_area: float, rng: np.random.Generator) -> np.ndarray:
    """Crop a random region with area fraction in [min_area, 1] and aspect ratio in [3/4, 4/3], resized back."""
    _, height, width = image.shape
    area = rng.uniform(min_area, 1.0) * height * width
    aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
    crop_h = int(round(np.sqrt(area / aspect)))
    crop_w = int(round(np.sqrt(area * aspect)))
    crop_h, crop_w = min(max(crop_h, 1), height), min(max(crop_w, 1), width)
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return resize_chw(image[:, top : top + crop_h, left : left + crop_w], (height, width))


def horizontal_flip(image: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability ``p``."""
    return image[:, :, ::-1].copy() if rng.random() < p else image.copy()


def color_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and (RGB) saturation factors in [1 - strength, 1 + strength].

    ``image`` is in pixel units ([0, 1] for decoded 8-bit images), not normalized.
    """
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    out = image * rng.uniform(low, high)  # brightness
    mean = out.mean()
    out = mean + (out - mean) * rng.uniform(low, high)  # contrast
    if out.shape[0] == 3:
        gray = (0.299 * out[0] + 0.587 * out[1] + 0.114 * out[2])[None]
        out = gray + (out - gray) * rng.uniform(low, high)  # saturation
    return out.astype(np.float32)


# --------------------------------------------------------------------------- waveforms [S] and frames [T, F]


def random_crop(values: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random window of ``length`` steps along axis 0 (unchanged copy when not longer)."""
    if len(values) <= length:
        return values.copy()
    start = int(rng.integers(0, len(values) - length + 1))
    return values[start : start + length].copy()


def center_crop(values: np.ndarray, length: int) -> np.ndarray:
    """The middle ``length`` steps along axis 0 (unchanged when not longer)."""
    if len(values) <= length:
        return values
    start = (len(values) - length) // 2
    return values[start : start + length]


def random_gain(wave: np.ndarray, max_db: float, rng: np.random.Generator) -> np.ndarray:
    """Scale by a gain drawn uniformly in [-max_db, +max_db] decibels."""
    return (wave * 10.0 ** (rng.uniform(-max_db, max_db) / 20.0)).astype(np.float32)


def add_noise(values: np.ndarray, std: float, rng: np.random.Generator, relative: bool = False) -> np.ndarray:
    """Add gaussian noise with standard deviation ``std`` (times the signal's std when ``relative``)."""
    scale = std * (float(values.std()) if relative else 1.0)
    if scale <= 0:
        return values.copy()
    return (values + rng.normal(0.0, scale, size=values.shape)).astype(np.float32)


def time_mask(values: np.ndarray, max_width: int, rng: np.random.Generator, length: int | None = None) -> np.ndarray:
    """Zero a span of up to ``max_width`` steps along axis 0 (within the first ``length`` real steps)."""
    out = values.copy()
    real = len(values) if length is None else min(length, len(values))
    if max_width <= 0 or real == 0:
        return out
    width = int(rng.integers(0, min(max_width, real) + 1))
    start = int(rng.integers(0, real - width + 1))
    out[start : start + width] = 0
    return out


def feature_mask(values: np.ndarray, max_width: int, rng: np.random.Generator) -> np.ndarray:
    """Zero a span of up to ``max_width`` features (last axis) of frames [T, F]."""
    out = values.copy()
    features = values.shape[-1]
    if max_width <= 0 or features == 0:
        return out
    width = int(rng.integers(0, min(max_width, features) + 1))
    start = int(rng.integers(0, features - width + 1))
    out[..., start : start + width] = 0
    return out


# --------------------------------------------------------------------------- tokens and modalities


def token_dropout(ids: np.ndarray, p: float, rng: np.random.Generator, keep: Sequence[int] = ()) -> np.ndarray:
    """Remove each token with probability ``p``, except ids in ``keep`` (special tokens); one token always stays."""
    if p <= 0 or len(ids) == 0:
        return ids.copy()
    drop = (rng.random(len(ids)) < p) & ~np.isin(ids, np.asarray(list(keep), dtype=ids.dtype))
    if drop.all():
        drop[int(rng.integers(0, len(ids)))] = False
    return ids[~drop].copy()


def modality_dropout(present: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Names to drop: each present modality with probability ``p``, never all of them."""
    names = list(present)
    if p <= 0 or len(names) < 2:
        return []
    dropped = [name for name in names if rng.random() < p]
    if len(dropped) == len(names):
        dropped.pop(int(rng.integers(0, len(dropped))))
    return dropped
