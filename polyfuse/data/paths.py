"""Resolve file paths written in manifest cells, safely, against a data root."""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Any

from polyfuse.errors import DataError

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def resolve_path(
    value: str,
    root: Path,
    *,
    allow_outside_root: bool = False,
    file: str | None = None,
    row: int | None = None,
    column: str | None = None,
) -> Path:
    """The file a cell names: relative paths resolve against ``root``.

    Refused with a DataError (naming ``file``/``row``/``column``): an empty value, a URL,
    a path that leaves ``root`` (``..`` or an absolute path elsewhere), a symlink whose
    target is outside ``root`` (both allowed with ``allow_outside_root``) and a path that
    does not exist. The returned path is absolute and not symlink-resolved, so its name
    (and suffix) is the one written in the manifest.
    """

    def fail(reason: str) -> DataError:
        return DataError(reason, file=file, row=row, column=column)

    text = _as_text(value)
    if not text:
        raise fail("empty path")
    if "\x00" in text:
        raise fail(f"{text!r}: invalid path (NUL character)")
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif _URL.match(text):
        raise fail(f"{text!r}: URLs are not read; download the files and write local paths")

    root = _resolved_root(os.path.abspath(root))  # absolute first: a relative root follows the cwd
    candidate = Path(text) if os.path.isabs(text) else root / text
    if not candidate.exists() and "\\" in text:  # a manifest written on Windows
        alternative = text.replace("\\", "/")
        alt_candidate = Path(alternative) if os.path.isabs(alternative) else root / alternative
        if alt_candidate.exists() or os.path.lexists(alt_candidate):
            text, candidate = alternative, alt_candidate

    if not allow_outside_root:
        lexical = Path(os.path.normpath(candidate))
        if not _is_within(lexical, root):
            how = "absolute path outside" if os.path.isabs(text) else "path escapes"
            raise fail(f"{text!r}: {how} the data root {str(root)!r} (use --allow-outside-root to permit it)")
    try:
        target = candidate.resolve()
        exists = candidate.exists()
    except (OSError, RuntimeError) as exc:  # symlink loops, permission problems
        raise fail(f"{text!r}: cannot resolve path ({exc})") from None
    if not allow_outside_root and not _is_within(target, root):
        raise fail(f"{text!r}: symlink points outside the data root {str(root)!r} (to {str(target)!r})")
    if not exists:
        if os.path.lexists(candidate):
            raise fail(f"{text!r}: broken symlink (target {str(target)!r} does not exist)")
        raise fail(f"{text!r}: file not found (looked for {str(candidate)!r})")
    return candidate


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> Path:
    """``root`` made absolute with symlinks resolved; cached, as every file of every row resolves against it."""
    return Path(root).resolve()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, os.PathLike):
        return os.fspath(value)  # type: ignore[return-value]
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    return str(value).strip()


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
