"""Augmentation primitives: seeded, shape-preserving, never modifying their input."""

from __future__ import annotations

import numpy as np
import pytest

from polyfuse.config import AugmentConfig
from polyfuse.data import augment as aug


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_random_resized_crop_is_seeded_and_keeps_shape() -> None:
    image = np.arange(3 * 16 * 20, dtype=np.float32).reshape(3, 16, 20)
    before = image.copy()
    a = aug.random_resized_crop(image, 0.3, rng(1))
    b = aug.random_resized_crop(image, 0.3, rng(1))
    c = aug.random_resized_crop(image, 0.3, rng(2))
    assert a.shape == image.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(image, before)
    # min_area=1 and aspect 1 region of a constant image stays constant
    flat = np.full((1, 8, 8), 0.5, np.float32)
    np.testing.assert_allclose(aug.random_resized_crop(flat, 1.0, rng(0)), flat, atol=1e-6)


def test_flip_and_jitter() -> None:
    image = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    flips = [aug.horizontal_flip(image, rng(s)) for s in range(20)]
    assert any(np.array_equal(f, image[:, :, ::-1]) for f in flips)
    assert any(np.array_equal(f, image) for f in flips)
    jittered = aug.color_jitter(image, 0.5, rng(3))
    assert jittered.shape == image.shape and not np.allclose(jittered, image)
    np.testing.assert_array_equal(aug.color_jitter(image, 0.5, rng(3)), jittered)
    np.testing.assert_allclose(aug.color_jitter(image, 0.0, rng(3)), image, atol=1e-6)


def test_crops_gain_noise() -> None:
    wave = np.linspace(-1, 1, 100, dtype=np.float32)
    crop = aug.random_crop(wave, 30, rng(0))
    assert crop.shape == (30,)
    start = int(np.argmin(np.abs(wave - crop[0])))
    np.testing.assert_array_equal(wave[start : start + 30], crop)
    np.testing.assert_array_equal(aug.center_crop(wave, 30), wave[35:65])
    assert aug.random_crop(wave[:10], 30, rng(0)).shape == (10,)
    louder = aug.random_gain(wave, 6.0, rng(0))
    ratio = float(louder[-1] / wave[-1])
    assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6
    noisy = aug.add_noise(wave, 0.1, rng(0), relative=True)
    assert 0.02 < float((noisy - wave).std()) / float(wave.std()) < 0.2
    np.testing.assert_array_equal(aug.add_noise(wave, 0.0, rng(0)), wave)


def test_time_and_feature_masks() -> None:
    frames = np.ones((50, 8), np.float32)
    for seed in range(10):
        masked = aug.time_mask(frames, 5, rng(seed))
        zero_rows = np.where((masked == 0).all(axis=1))[0]
        assert len(zero_rows) <= 5
        if len(zero_rows):
            assert zero_rows.max() - zero_rows.min() + 1 == len(zero_rows)  # one contiguous span
        masked = aug.feature_mask(frames, 3, rng(seed))
        assert ((masked == 0).all(axis=0)).sum() <= 3
    assert (frames == 1).all()
    short = aug.time_mask(frames, 5, rng(0), length=2)
    assert (short[2:] == 1).all()


def test_token_dropout_keeps_special_tokens_and_one_token() -> None:
    ids = np.array([2, 10, 11, 12, 13, 3], dtype=np.int64)
    out = aug.token_dropout(ids, 0.99, rng(0), keep=[2, 3])
    assert out[0] == 2 and out[-1] == 3 and out.dtype == np.int64
    only = aug.token_dropout(np.array([7], np.int64), 1.0, rng(0))
    np.testing.assert_array_equal(only, [7])
    np.testing.assert_array_equal(aug.token_dropout(ids, 0.0, rng(0)), ids)


@pytest.mark.parametrize("p", [0.3, 0.9, 1.0])
def test_modality_dropout_never_drops_all(p: float) -> None:
    names = ["image", "text", "audio"]
    generator = rng(0)
    drops = [aug.modality_dropout(names, p, generator) for _ in range(4000)]
    assert all(len(d) < len(names) for d in drops)
    if p == 1.0:
        assert all(len(d) == 2 for d in drops)
    # each input is dropped with probability p, except that one of an all-dropped row is kept:
    # per input p - p^3 / 3 (0.291 at p=0.3, 0.657 at p=0.9, 2/3 at p=1)
    for name in names:
        rate = sum(name in d for d in drops) / len(drops)
        assert abs(rate - (p - p**3 / 3)) < 0.03, (name, rate)
    assert aug.modality_dropout(["image"], 1.0, generator) == []
    assert aug.modality_dropout(names, 0.0, generator) == []


def test_augment_config_defaults_are_off() -> None:
    cfg = AugmentConfig()
    assert not cfg.enabled and cfg.modality_dropout == 0.0
