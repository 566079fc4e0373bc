"""Shared helpers of the CLI verbs."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """User mistakes (PolyfuseError) print one red line and exit 2, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from polyfuse.errors import PolyfuseError

        try:
            return fn(*args, **kwargs)
        except PolyfuseError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def console():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def retrieval_table(retrieval: dict[str, Any], title: str) -> Any:
    """A table of ``{objective: {direction: metrics}}`` (recall@K, median rank, chance R@1)."""
    from rich.table import Table

    table = Table(title=title)
    ks: list[str] = []
    for per_direction in retrieval.values():
        for values in per_direction.values():
            ks += [k for k in values if k.startswith("R@") and k not in ks]
    for col in ("objective", "direction", *ks, "median rank", "chance R@1", "queries"):
        table.add_column(col)
    for objective, per_direction in retrieval.items():
        for direction, values in per_direction.items():
            table.add_row(
                objective, direction, *[f"{values[k]:.3f}" for k in ks], f"{values['median_rank']:.1f}",
                f"{values['chance_R@1']:.4f}", str(values["queries"]),
            )
    return table
