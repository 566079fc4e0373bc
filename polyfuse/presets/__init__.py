"""Presets for a user's own table (``fast``, ``medium``, ``best``): readable YAML shipped with polyfuse.

A preset says which encoders to use for each input kind and when, how to size the schedule,
validation and class weighting, and (``best``) what to select among. ``polyfuse.presets.table``
applies one to a table; a preset may start from another with ``base: NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from polyfuse.config import ConfigError, load_yaml

PRESET_DIR = Path(__file__).parent
DEFAULT_PRESET = "medium"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The preset's dict (``base:`` resolved), from a shipped name or a YAML file of the same shape."""
    from polyfuse.recipes import _merge

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        raw = load_yaml(path)
    else:
        file = PRESET_DIR / f"{name_or_path}.yaml"
        if not file.is_file():
            raise ConfigError(f"--preset: {name_or_path!r} is not a preset; allowed: {', '.join(preset_names())} or a YAML file")
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    base = raw.pop("base", None)
    if base is not None:
        if base in _seen:
            raise ConfigError(f"preset {name_or_path}: base chain loops through {base}")
        raw = _merge(load_preset(base, _seen + (str(name_or_path),)), raw)
    raw["name"] = path.stem if path.suffix in (".yaml", ".yml") else str(name_or_path)
    return raw


__all__ = ["DEFAULT_PRESET", "load_preset", "preset_names"]
