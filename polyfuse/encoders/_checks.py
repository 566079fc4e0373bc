"""Argument checks shared by the encoders; a bad value raises ConfigError naming the parameter."""

from __future__ import annotations

from typing import Any, Iterable

from polyfuse.errors import ConfigError


def choice(encoder: str, key: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else a ConfigError naming ``key`` (the builder adds the key path)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not allowed for {encoder}; allowed: {', '.join(map(str, allowed))}")
    return value


def positive(encoder: str, **values: Any) -> None:
    """Every given value must be a positive int (bools are not ints here)."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}: expected a positive integer ({encoder}), got {value!r}")


def divisible(encoder: str, dim: int, heads: int) -> None:
    if dim % heads:
        raise ConfigError(f"heads: dim={dim} is not divisible by heads={heads} ({encoder})")


def required(encoder: str, **values: Any) -> None:
    """Values the data must provide (injected by the builder); None means the data did not say."""
    for key, value in values.items():
        if value is None:
            raise ConfigError(f"{encoder} needs {key!r} from the data (the input's processor did not provide it)")


