"""The processor contract: one manifest row -> numpy arrays for one input. Numpy only, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import numpy as np
import pandas as pd

from polyfuse.cells import is_missing  # noqa: F401  (processors and callers import it from here)
from polyfuse.config import AugmentConfig, ConfigError
from polyfuse.data.report import EMPTY, STAGE_IMPUTED, Problem  # noqa: F401  (EMPTY: pipeline and serve import it from here)
from polyfuse.errors import DataError
from polyfuse.types import InputSpec

T = TypeVar("T")

Arrays = dict[str, np.ndarray]

#: Short problem kinds (the data report's summary counts these).
BAD_PATH = "file missing or not allowed"
UNREADABLE = "unreadable file"
INVALID = "invalid value"


@dataclass
class FitContext:
    """Where the training rows come from (file paths in cells resolve against ``root``)."""

    root: Path = field(default_factory=Path.cwd)
    allow_outside_root: bool = False
    source: str | None = None  # the manifest file, for messages


@dataclass
class RowContext:
    """Where one row comes from; processors add non-fatal notes (imputed values) to ``notes``."""

    root: Path = field(default_factory=Path.cwd)
    allow_outside_root: bool = False
    source: str | None = None
    row: int | None = None
    split: str | None = None  # "train" keeps what training augmentation needs (e.g. full-length audio)
    notes: list[Problem] = field(default_factory=list)

    def note(self, column: str, reason: str, category: str, name: str | None = None) -> None:
        """Record a value that was filled in (the row is still used)."""
        self.notes.append(Problem(STAGE_IMPUTED, column, reason, category, name))

    def error(self, reason: str, column: str | None, category: str = INVALID) -> DataError:
        """A DataError located at this row (file = the manifest)."""
        return located(DataError(reason), self, column, category)


def located(exc: DataError, ctx: RowContext | FitContext, column: str | None, category: str) -> DataError:
    """Copy of ``exc`` naming the manifest file, row and column, tagged with a problem ``category``."""
    row = getattr(ctx, "row", None)
    out = DataError(
        exc.reason,
        file=exc.file if exc.file is not None else ctx.source,
        row=exc.row if exc.row is not None else row,
        column=exc.column if exc.column is not None else column,
    )
    out.category = getattr(exc, "category", None) or category  # type: ignore[attr-defined]
    return out


def read_file(
    value: Any, ctx: RowContext | FitContext, column: str, reader: Callable[[Path | bytes], T]
) -> T:
    """Resolve a path cell (or take uploaded bytes) and read it; errors name file/row/column."""
    from polyfuse.data.paths import resolve_path

    if isinstance(value, (bytes, bytearray, memoryview)):
        source: Path | bytes = bytes(value)
        label = "uploaded file"
    else:
        label = str(value)
        try:
            source = resolve_path(
                label, ctx.root, allow_outside_root=ctx.allow_outside_root,
                file=ctx.source, row=getattr(ctx, "row", None), column=column,
            )
        except DataError as exc:
            raise located(exc, ctx, column, BAD_PATH) from None
    try:
        return reader(source)
    except DataError as exc:
        reason = exc.reason if label in exc.reason else f"{label}: {exc.reason}"
        raise located(DataError(reason), ctx, column, UNREADABLE) from None
    except (OSError, ValueError, TypeError, RuntimeError, EOFError, SyntaxError) as exc:  # decoder failures
        raise located(DataError(f"{label}: cannot read ({type(exc).__name__}: {exc})"), ctx, column, UNREADABLE) from None


def sample_positions(n: int, limit: int) -> np.ndarray:
    """Up to ``limit`` evenly spaced row positions of ``n`` rows (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def as_int_pair(value: Any, option: str) -> tuple[int, int] | None:
    """``[H, W]`` (or one int for a square) -> (H, W); ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{option}: expected [height, width] (positive integers), got {value!r}")
    return int(value[0]), int(value[1])


def as_floats(value: Any, option: str) -> list[float] | None:
    """A number or list of numbers -> list of floats; ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return [float(v) for v in value]
    raise ConfigError(f"{option}: expected a number or a list of numbers (one per channel), got {value!r}")


def positive_int(value: Any, option: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{option}: expected a positive integer{' or null' if allow_none else ''}, got {value!r}")
    return int(value)


class Processor:
    """Turns one input's cells of a row into arrays; fitted on the training split only.

    Subclasses set ``kind``, fill ``options`` (their constructor keywords, JSON-able) and
    ``columns`` (the manifest columns they read), and implement ``process``, ``collate``
    and ``spec``; ``fit``/``augment``/``state_dict`` are optional.
    """

    kind: ClassVar[str] = ""

    def __init__(self) -> None:
        self.options: dict[str, Any] = {}
        self.columns: list[str] = []

    # ------------------------------------------------------------------ contract
    def fit(self, frame: pd.DataFrame, ctx: FitContext) -> None:
        """Learn statistics from the training rows (default: nothing to learn)."""

    def process(self, row: Mapping[str, Any], ctx: RowContext) -> Arrays | None:
        """Arrays for one row, or None when the value is missing. Raises DataError when unusable."""
        raise NotImplementedError

    def augment(self, arrays: Arrays, rng: np.random.Generator, cfg: AugmentConfig) -> Arrays:
        """Training-time random transformation of ``process``'s output (default: none)."""
        return arrays

    def collate(self, items: list[Arrays | None]) -> Arrays:
        """Stack (and pad) the rows of a batch; None items (missing) become zeros."""
        raise NotImplementedError

    def spec(self, name: str) -> InputSpec:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Fitted statistics as a JSON-able dict (options are saved separately)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    def save_files(self, directory: Path, name: str) -> list[str]:
        """Write extra files (tokenizers) next to the pipeline; returns their names."""
        return []

    def load_files(self, directory: Path, name: str) -> None:
        """Read what ``save_files`` wrote."""

    # ------------------------------------------------------------------ helpers
    def cell(self, row: Mapping[str, Any], column: str) -> Any:
        """The row's value of ``column`` (None when the column is absent)."""
        value = row.get(column) if hasattr(row, "get") else None
        return None if is_missing(value) else value

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def stack_or_zeros(items: list[Arrays | None], key: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """[B, *shape]: each present item's ``key`` array, zeros for missing items."""
    out = np.zeros((len(items), *shape), dtype=dtype)
    for i, item in enumerate(items):
        if item is not None:
            out[i] = item[key]
    return out


def pad_stack(
    items: list[Arrays | None], key: str, dtype: Any, tail: tuple[int, ...] = (), fill: Any = 0, min_length: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Pad variable-length arrays [T, *tail] along T: returns ([B, T_max, *tail], lengths [B]).

    ``tail`` is the per-step shape used when every item is missing.
    """
    lengths = np.array([0 if item is None else len(item[key]) for item in items], dtype=np.int64)
    t_max = max(int(lengths.max(initial=0)), min_length)
    for item in items:
        if item is not None:
            tail = tuple(item[key].shape[1:])
            break
    out = np.full((len(items), t_max, *tail), fill, dtype=dtype)
    for i, item in enumerate(items):
        if item is not None and lengths[i]:
            out[i, : lengths[i]] = item[key]
    return out, lengths
