"""Fixed features computed once per row: fit the extractors, compute (or load) features, serve them in batches.

Encoders that are ``FeatureEncoder``s (random-convolution series features, pixel statistics,
frozen pretrained backbones) have a part that training never changes. Before training, for
each such input:

1. the extractor's data-dependent constants are fitted on a sample of training rows;
2. every row of every split is run through the extractor once (batched, with a progress bar),
   or read back from the on-disk cache: one entry per row, keyed by SHA-256 of the extractor's
   fingerprint (class, options, fixed tensors) and the row's preprocessed arrays, so a change
   of weights or of preprocessing misses the cache and is recomputed;
3. the per-feature scaler is fitted on the training rows' features;
4. datasets hand out ``{"features": [F]}`` for that input instead of the raw arrays.

``train.feature_cache``: ``disk`` (default; ``$POLYFUSE_CACHE/features``), ``memory`` (computed
once per run, not stored), ``off`` (the extractor runs on every batch, as at inference).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset

from polyfuse.data.collate import to_torch
from polyfuse.data.dataset import _track
from polyfuse.data.pipeline import DataPipeline, Example
from polyfuse.encoders.features import FEATURES_KEY, FeatureEncoder

FIT_ROWS = 256  # training rows the extractor constants are fitted on
STREAM_FIT_ROWS = 1024  # streamed from shards (feature_cache off): rows the extractor and the scaler are fitted on
MODES = ("disk", "memory", "off")


def feature_cache_dir() -> Path:
    """``$POLYFUSE_CACHE/features`` (default ``~/.cache/polyfuse/features``)."""
    env = os.environ.get("POLYFUSE_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "polyfuse") / "features"


class FeatureStore:
    """Rows' features of one extractor on disk: ``<root>/<fingerprint>/<chunk>.npz`` (keys + values)."""

    def __init__(self, root: Path, fingerprint: str) -> None:
        self.folder = Path(root) / fingerprint[:32]
        self._index: dict[bytes, np.ndarray] | None = None

    def load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            index: dict[bytes, np.ndarray] = {}
            for chunk in sorted(self.folder.glob("*.npz")):
                try:
                    with np.load(chunk, allow_pickle=False) as data:
                        for key, value in zip(data["keys"], data["values"]):  # keys: uint8 [N, 32]
                            index[key.tobytes()] = value
                except (OSError, ValueError, KeyError):  # a torn or foreign file: ignored, recomputed
                    continue
            self._index = index
        return self._index

    def add(self, keys: Sequence[bytes], values: np.ndarray) -> None:
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(b"".join(keys)).hexdigest()[:24]
        tmp = self.folder / f".{name}.{uuid.uuid4().hex}.tmp.npz"
        # raw digests as uint8 rows (a bytes dtype would drop trailing zero bytes)
        digests = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        np.savez(tmp, keys=digests, values=values.astype(np.float32))
        tmp.replace(self.folder / f"{name}.npz")
        index = self.load()
        for key, value in zip(keys, values):
            index[key] = value


def row_key(fingerprint: str, arrays: Mapping[str, np.ndarray] | None) -> bytes:
    digest = hashlib.sha256(fingerprint.encode())
    for name in sorted(arrays or {}):
        array = np.ascontiguousarray(arrays[name])  # type: ignore[index]
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.digest()


@dataclass
class FeatureReport:
    """What the precompute step did, per input (for the run report and the benchmark)."""

    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.inputs)


def plain_examples(dataset: Any) -> list[Example]:
    """Every kept row of a split, never augmented (features are of the rows as they are)."""
    augment, dataset.augment = dataset.augment, None
    try:
        return [dataset[i] for i in range(len(dataset))]
    finally:
        dataset.augment = augment


@torch.no_grad()
def _extract_rows(
    encoder: FeatureEncoder, pipeline: DataPipeline, name: str, examples: list[Example], positions: list[int],
    batch_size: int, progress: bool, label: str,
) -> np.ndarray:
    """Features [len(positions), F] of the given rows (missing rows included: their input is zeros)."""
    out = np.zeros((len(positions), encoder.feature_dim), dtype=np.float32)
    chosen = [examples[p] for p in positions]
    steps = range(0, len(chosen), batch_size)
    for start in _track(steps, progress, label, len(steps)):
        chunk = chosen[start : start + batch_size]
        inputs = to_torch(pipeline.collate(chunk))["inputs"][name]
        out[start : start + len(chunk)] = encoder.extract(inputs).float().numpy()
    return out


def _fit_extractor(encoder: FeatureEncoder, pipeline: DataPipeline, name: str, examples: list[Example]) -> None:
    """The extractor's data-dependent constants, fitted on up to ``FIT_ROWS`` of the rows holding input ``name``
    (spread evenly over them)."""
    rows = [i for i, ex in enumerate(examples) if ex.inputs.get(name) is not None]
    chosen = rows[:: max(1, len(rows) // FIT_ROWS)][:FIT_ROWS]
    if chosen:
        encoder.fit_extractor(to_torch(pipeline.collate([examples[i] for i in chosen]))["inputs"][name])


def _fit_scaler(encoder: FeatureEncoder, name: str, examples: list[Example], values: np.ndarray) -> None:
    """The per-feature scaler fitted on ``values`` [N, F], the features of ``examples`` (rows without ``name`` skipped)."""
    present = torch.tensor([ex.inputs.get(name) is not None for ex in examples], dtype=torch.bool)
    encoder.fit_scaler(torch.from_numpy(values), present)


def precompute_features(
    model: torch.nn.Module,
    pipeline: DataPipeline,
    datasets: Mapping[str, Any],
    *,
    mode: str = "disk",
    cache_dir: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[dict[str, Any], FeatureReport]:
    """Fit every FeatureEncoder of ``model`` and return datasets serving their features (see module doc)."""
    if mode not in MODES:
        from polyfuse.config import ConfigError

        raise ConfigError(f"train.feature_cache: {mode!r} is not allowed; allowed: {', '.join(MODES)}")
    encoders = {n: e for n, e in model.encoders.items() if isinstance(e, FeatureEncoder)}
    report = FeatureReport()
    if not encoders or "train" not in datasets:
        return dict(datasets), report
    if isinstance(datasets["train"], IterableDataset):
        if mode != "off":
            from polyfuse.config import ConfigError

            raise ConfigError(
                f"model.encoders.{next(iter(encoders))}: a fixed-feature encoder ({type(next(iter(encoders.values()))).__name__}) "
                f"computes its features once per row before training, which rows streamed from shards do not allow; "
                f"set train.feature_cache=off (features computed in every batch, the extractor fitted on {STREAM_FIT_ROWS} "
                "streamed training rows), choose a trainable encoder, or train from the manifest"
            )
        return dict(datasets), _fit_on_stream_sample(model, encoders, pipeline, datasets["train"], batch_size, progress)
    plain = {split: plain_examples(ds) for split, ds in datasets.items()}
    features: dict[str, dict[str, np.ndarray]] = {split: {} for split in datasets}
    was_training = model.training
    model.eval()
    for name, encoder in encoders.items():
        started = time.perf_counter()
        _fit_extractor(encoder, pipeline, name, plain["train"])
        fingerprint = encoder.extractor_fingerprint()
        store = FeatureStore(cache_dir or feature_cache_dir(), fingerprint) if mode == "disk" else None
        known = store.load() if store is not None else {}
        computed = reused = 0
        for split, examples in plain.items():
            keys = [row_key(fingerprint, ex.inputs.get(name)) for ex in examples]
            values = np.zeros((len(examples), encoder.feature_dim), dtype=np.float32)
            todo = []
            for i, key in enumerate(keys):
                if key in known:
                    values[i] = known[key]
                else:
                    todo.append(i)
            if todo:
                fresh = _extract_rows(encoder, pipeline, name, examples, todo, batch_size, progress,
                                      f"{name}: features of {split} rows")
                values[todo] = fresh
                if store is not None:
                    store.add([keys[i] for i in todo], fresh)
            computed += len(todo)
            reused += len(examples) - len(todo)
            features[split][name] = values
        _fit_scaler(encoder, name, plain["train"], features["train"][name])
        report.inputs[name] = {
            "encoder": type(encoder).__name__, "feature_dim": encoder.feature_dim, "computed_rows": computed,
            "cached_rows": reused, "seconds": round(time.perf_counter() - started, 2), "mode": mode,
            "fingerprint": fingerprint[:16],
        }
    model.train(was_training)
    if mode == "off":
        return dict(datasets), report
    wrapped = {split: FeatureDataset(ds, features[split]) for split, ds in datasets.items()}
    return wrapped, report


def _fit_on_stream_sample(
    model: torch.nn.Module, encoders: Mapping[str, FeatureEncoder], pipeline: DataPipeline, train: Any,
    batch_size: int, progress: bool,
) -> FeatureReport:
    """Streamed training rows (``train.feature_cache: off``): each extractor and its scaler fitted on a sample of
    ``STREAM_FIT_ROWS`` rows spread over the shards; the features are then computed in every batch."""
    report = FeatureReport()
    sample = train.sample(STREAM_FIT_ROWS)
    was_training = model.training
    model.eval()
    for name, encoder in encoders.items():
        started = time.perf_counter()
        _fit_extractor(encoder, pipeline, name, sample)
        values = _extract_rows(encoder, pipeline, name, sample, list(range(len(sample))), batch_size, progress,
                               f"{name}: fitting on {len(sample)} streamed rows")
        _fit_scaler(encoder, name, sample, values)
        report.inputs[name] = {
            "encoder": type(encoder).__name__, "feature_dim": encoder.feature_dim, "computed_rows": len(sample),
            "cached_rows": 0, "seconds": round(time.perf_counter() - started, 2), "mode": "off",
            "fingerprint": encoder.extractor_fingerprint()[:16], "fitted_on_streamed_rows": len(sample),
        }
    model.train(was_training)
    return report


class FeatureDataset(torch.utils.data.Dataset):
    """A split whose FeatureEncoder inputs are replaced by their precomputed features (same rows, same order)."""

    def __init__(self, inner: Any, features: Mapping[str, np.ndarray]) -> None:
        self.inner = inner
        self.features = dict(features)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, attr: str) -> Any:  # rows, frame, pipeline, split, set_epoch ... of the wrapped split
        if attr in ("inner", "features"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    def __getitem__(self, index: int) -> Example:
        example = self.inner[index]
        inputs = dict(example.inputs)
        for name, values in self.features.items():
            if inputs.get(name) is not None:  # missing, or dropped by modality dropout: stays missing
                inputs[name] = {FEATURES_KEY: values[index]}
        return Example(inputs, example.labels, example.row, example.problems)


class FeatureCollator:
    """``collate_fn`` for FeatureDatasets: precomputed inputs stacked as ``{"features": [B,F]}``."""

    def __init__(self, pipeline: DataPipeline, names: Sequence[str], dims: Mapping[str, int]) -> None:
        self.pipeline = pipeline
        self.names = list(names)
        self.dims = dict(dims)

    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        plain = []
        for ex in examples:
            inputs = {k: (None if k in self.names else v) for k, v in ex.inputs.items()}
            plain.append(Example(inputs, ex.labels, ex.row, ex.problems))
        batch = self.pipeline.collate(plain)
        for name in self.names:
            rows = [ex.inputs.get(name) for ex in examples]
            values = np.zeros((len(rows), self.dims[name]), dtype=np.float32)
            for i, item in enumerate(rows):
                if item is not None:
                    values[i] = item[FEATURES_KEY]
            batch["inputs"][name] = {FEATURES_KEY: values}
            batch["present"][name] = np.array([item is not None for item in rows], dtype=bool)
        return to_torch(batch)


def feature_collator(pipeline: DataPipeline, model: torch.nn.Module, datasets: Mapping[str, Any]) -> Any:
    """The collate_fn for ``datasets``: a FeatureCollator when they serve features, else the plain one."""
    from polyfuse.data.collate import Collator

    first = next(iter(datasets.values()), None)
    if not isinstance(first, FeatureDataset):
        return Collator(pipeline)
    dims = {n: int(model.encoders[n].feature_dim) for n in first.features}
    return FeatureCollator(pipeline, list(first.features), dims)
