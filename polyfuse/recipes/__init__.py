"""Named YAML presets shipped with polyfuse (``polyfuse recipes`` lists them).

A recipe may start from another with ``base: NAME``; its keys then override the base's.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from polyfuse.config import Config, ConfigError, load_yaml

RECIPE_DIR = Path(__file__).parent


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and "name" not in value:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def named_yaml(name_or_path: str, folder: Path, kind: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The dict of a shipped YAML (``folder/<name>.yaml``) or a YAML path, with ``base:`` chains resolved."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        raw = load_yaml(path)
    else:
        file = folder / f"{name_or_path}.yaml"
        if not file.is_file():
            names = sorted(p.stem for p in folder.glob("*.yaml"))
            raise ConfigError(f"{name_or_path!r} is neither a config file nor a {kind}; {kind}s: {', '.join(names)}")
        raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    base = raw.pop("base", None)
    if base is not None:
        if base in _seen:
            raise ConfigError(f"{kind} {name_or_path}: base chain loops through {base}")
        raw = _merge(named_yaml(base, folder, kind, _seen + (str(name_or_path),)), raw)
    return raw


def recipe_dict(name_or_path: str) -> dict[str, Any]:
    """The raw dict of a recipe name or a YAML path, with ``base:`` chains resolved."""
    return named_yaml(name_or_path, RECIPE_DIR, "recipe")


def load_recipe(name_or_path: str, overrides: list[str] | None = None) -> Config:
    from polyfuse.config import apply_overrides

    return Config.from_dict(apply_overrides(recipe_dict(name_or_path), overrides or []))


def recipe_summary(name: str) -> dict[str, Any]:
    raw = recipe_dict(name)
    file = RECIPE_DIR / f"{name}.yaml"
    first = file.read_text(encoding="utf-8").splitlines()[0] if file.is_file() else ""
    data = raw.get("data", {})
    model = raw.get("model", {})
    fusion = model.get("fusion", "concat")
    return {
        "name": name,
        "description": first.lstrip("# ").strip(),
        "dataset": data.get("dataset") or data.get("train"),
        "inputs": data.get("use") or "all",
        "fusion": fusion if isinstance(fusion, str) else fusion.get("name"),
    }
