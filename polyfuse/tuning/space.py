"""The search space: dotted config keys and the values each may take (read from YAML, checked early).

Format (a mapping from a dotted config key to how its value is searched)::

    model.fusion.name: {choices: [concat, gated]}    # one of these (strings, numbers, booleans, null)
    model.dim: [32, 64]                                # shorthand for {choices: [...]}
    train.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float, log-uniform
    model.fusion.dropout: {low: 0.0, high: 0.5}        # a float, uniform (optional step: 0.1)
    train.epochs: {low: 2, high: 6, int: true}         # an integer (optional step, or log: true)
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from polyfuse.config import Config, ConfigError

#: keys a parameter's mapping may hold
SPEC_KEYS = ("choices", "low", "high", "log", "step", "int")
#: combinations of choices checked against the config before any trial (beyond it: each value alone)
MAX_CHECKED_COMBINATIONS = 256


@dataclass(frozen=True)
class Param:
    """One searched config key: a categorical ``choices`` or a numeric range ``low..high``."""

    key: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """The value of this parameter for an Optuna trial."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)  # type: ignore[arg-type]

    def corners(self) -> tuple[Any, ...]:
        """Values that bound what this parameter can take (every choice, or both ends of the range)."""
        if self.choices is not None:
            return self.choices
        return (self.low, self.high)


@dataclass(frozen=True)
class SearchSpace:
    """The parameters searched, in file order."""

    params: tuple[Param, ...]

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """``{key: value}`` for one trial."""
        return {p.key: p.suggest(trial) for p in self.params}

    def apply(self, config: Config, values: Mapping[str, Any]) -> Config:
        """``config`` with ``values`` set through the normal override and validation path."""
        from polyfuse.build import validate_config

        where = ", ".join(f"{k}={_text(v)}" for k, v in values.items())
        try:
            result = config.with_overrides(overrides(values))
            validate_config(result)
        except ConfigError as exc:
            raise ConfigError(f"search space ({where}): {exc}") from None
        return result

    def check(self, config: Config) -> None:
        """ConfigError naming the key unless every combination of choices (ranges at both ends) is a valid config."""
        for param in self.params:  # each key alone first: the error then names the key that is wrong
            for value in param.corners():
                self.apply(config, {param.key: value})
        combos = math.prod(len(p.corners()) for p in self.params)
        if combos > MAX_CHECKED_COMBINATIONS or len(self.params) < 2:
            return
        for values in itertools.product(*(p.corners() for p in self.params)):
            self.apply(config, dict(zip(self.keys, values)))


def overrides(values: Mapping[str, Any]) -> list[str]:
    """``key=value`` overrides (values written as JSON, which the override parser reads as YAML)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _text(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def load_space(source: str | Path | Mapping[str, Any]) -> SearchSpace:
    """A SearchSpace from a YAML file or a mapping; ConfigError naming the key for anything malformed."""
    if isinstance(source, Mapping):
        raw: Mapping[str, Any] = source
        label = "search space"
    else:
        from polyfuse.config import load_yaml

        if not Path(source).is_file():
            raise ConfigError(f"--space {source}: no such file (a YAML mapping of dotted config keys, see docs/tune.md)")
        raw = load_yaml(source)
        label = str(source)
    if not raw:
        raise ConfigError(f"{label}: empty; give at least one key, e.g. 'train.lr: {{low: 1.0e-4, high: 1.0e-2, log: true}}'")
    return SearchSpace(tuple(parse_param(str(key), spec, label) for key, spec in raw.items()))


def parse_param(key: str, spec: Any, label: str = "search space") -> Param:
    """One entry of the space file (see the module docstring for the forms)."""
    where = f"{label}: {key}"
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{where}: not a dotted config key (e.g. train.lr)")
    if isinstance(spec, (list, tuple)):
        spec = {"choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected {{choices: [...]}} or {{low: ..., high: ...}}, got {spec!r}")
    unknown = [k for k in spec if k not in SPEC_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown option {unknown[0]!r}; allowed: {', '.join(SPEC_KEYS)}")
    if "choices" in spec:
        return _categorical(key, spec, where)
    return _numeric(key, spec, where)


def _categorical(key: str, spec: Mapping[str, Any], where: str) -> Param:
    extra = [k for k in spec if k != "choices"]
    if extra:
        raise ConfigError(f"{where}: {extra[0]!r} does not go with choices")
    choices = spec["choices"]
    if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
        raise ConfigError(f"{where}: choices must be a non-empty list")
    for value in choices:
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{where}: choice {value!r} is not a string, number, boolean or null")
    if len(set(map(repr, choices))) != len(choices):
        raise ConfigError(f"{where}: a choice is listed twice")
    return Param(key, choices=tuple(choices))


def _numeric(key: str, spec: Mapping[str, Any], where: str) -> Param:
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a range needs both low and high (or give choices: [...])")
    integer = spec.get("int", False)
    log = spec.get("log", False)
    for name, flag in (("int", integer), ("log", log)):
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {name} must be true or false, got {flag!r}")
    low, high, step = spec["low"], spec["high"], spec.get("step")
    for name, value in (("low", low), ("high", high), ("step", step)):
        if value is None and name == "step":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a number, got {value!r}")
        if integer and float(value) != int(value):
            raise ConfigError(f"{where}: {name} must be an integer with int: true, got {value!r}")
    if low >= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0, got {low}")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{where}: step must be > 0, got {step}")
        if log:
            raise ConfigError(f"{where}: step and log: true do not go together")
    if integer:
        return Param(key, low=int(low), high=int(high), log=log, step=None if step is None else int(step), integer=True)
    return Param(key, low=float(low), high=float(high), log=log, step=None if step is None else float(step))
