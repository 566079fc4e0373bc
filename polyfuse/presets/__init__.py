"""Presets for a user's own table (``fast``, ``medium``, ``best``): readable YAML shipped with polyfuse.

A preset says which encoders to use for each input kind and when, how to size the schedule,
validation and class weighting, and (``best``) what to select among. ``polyfuse.presets.table``
applies one to a table; a preset may start from another with ``base: NAME``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyfuse.errors import ConfigError

PRESET_DIR = Path(__file__).parent
DEFAULT_PRESET = "medium"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """The preset's dict (``base:`` resolved), from a shipped name or a YAML file of the same shape."""
    from polyfuse.recipes import named_yaml

    path = Path(name_or_path)
    is_file = path.suffix in (".yaml", ".yml")
    if not is_file and not (PRESET_DIR / f"{name_or_path}.yaml").is_file():
        raise ConfigError(f"--preset: {name_or_path!r} is not a preset; allowed: {', '.join(preset_names())} or a YAML file")
    raw = named_yaml(name_or_path, PRESET_DIR, "preset")
    raw["name"] = path.stem if is_file else str(name_or_path)
    return raw


__all__ = ["DEFAULT_PRESET", "load_preset", "preset_names"]
