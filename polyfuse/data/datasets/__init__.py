"""Built-in datasets made of real data that works offline (source files ship in packages).

Importing this package registers them in ``polyfuse.registry.DATASETS``::

    from polyfuse.data.datasets import prepare_dataset
    ds = prepare_dataset("avmnist")            # manifests under cache_root()/avmnist-v1/
    ds.train, ds.root, ds.inputs, ds.tasks     # what a config's data/tasks sections need

``polyfuse datasets`` lists them (installed or not, counts when prepared).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from polyfuse.data.datasets import avmnist, clothing, easy_vqa, emoji  # noqa: F401  (registers)
from polyfuse.data.datasets.base import (
    DatasetInfo,
    PreparedDataset,
    cache_root,
    missing_requirements,
    prepared_counts,
    require_file,
)
from polyfuse.errors import PolyfuseError
from polyfuse.registry import DATASETS

__all__ = [
    "DatasetInfo",
    "PreparedDataset",
    "cache_root",
    "require_file",
    "prepare_dataset",
    "dataset_names",
    "dataset_info",
    "describe_dataset",
]


def dataset_names() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    """The description of a registered dataset (without preparing it)."""
    return DATASETS.get(name).metadata["info"]


def prepare_dataset(
    name: str, cache: str | Path | None = None, source: str | Path | None = None, **options: Any
) -> PreparedDataset:
    """Prepare (once) and return the built-in dataset ``name``; ``options`` are its ``dataset_options``."""
    from polyfuse.config import ConfigError

    try:
        entry = DATASETS.get(name)
    except KeyError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    return entry.factory(cache=Path(cache) if cache is not None else None, source=source, **options)


def describe_dataset(name: str, cache: str | Path | None = None, prepare: bool = False) -> dict[str, Any]:
    """A listing row: info, whether its source files are installed, counts when prepared."""
    entry = DATASETS.get(name)
    info: DatasetInfo = entry.metadata["info"]
    missing = missing_requirements(entry.metadata.get("requirements", ()))
    cache_path = Path(cache) if cache is not None else None
    row: dict[str, Any] = {
        "name": name,
        "description": info.description,
        "modalities": list(info.modalities),
        "tasks": list(info.tasks),
        "license": info.license,
        "size": info.size,
        "source": info.source,
        "options": {
            p.name: p.default for p in entry.parameters().values() if p.name not in ("cache", "source")
            and p.default is not inspect.Parameter.empty
        },
        "installed": not missing,
        "install": missing or None,
        "counts": prepared_counts(name, cache_path),
        "error": None,
    }
    if prepare:
        try:
            prepared = prepare_dataset(name, cache=cache_path)
            row["counts"] = prepared.info.counts
        except PolyfuseError as exc:
            row["error"] = str(exc)
    return row
