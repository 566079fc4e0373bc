"""The Python API: ``polyfuse.fit`` and ``polyfuse.load``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from polyfuse.config import Config
from polyfuse.predictor import Predictor
from polyfuse.train.runner import RunResult


def resolve_config(source: str | Path | Config | Mapping[str, Any], overrides: Sequence[str] = ()) -> Config:
    """A Config from a recipe name, a YAML path, a dict or a Config, with dotted overrides."""
    from polyfuse.recipes import load_recipe

    if isinstance(source, Config):
        config = source
    elif isinstance(source, Mapping):
        config = Config.from_dict(dict(source))
    else:
        config = load_recipe(str(source))
    return config.with_overrides(list(overrides)) if overrides else config


def fit(
    config: str | Path | Config | Mapping[str, Any],
    *,
    out: str | Path,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
) -> RunResult:
    """Train a model from a recipe name, YAML file, dict or Config; returns the run directory and metrics."""
    from polyfuse.train.runner import run_training

    return run_training(resolve_config(config, overrides), out, resume=resume, overwrite=overwrite, progress=progress)


def load(path: str | Path) -> Predictor:
    """Load a trained model from its checkpoint directory (never unpickles)."""
    return Predictor.load(Path(path))
