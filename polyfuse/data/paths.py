"""Resolve file paths written in manifest cells, safely, against a data root."""

from __future__ import annotations

import functools
import math
import os
import re
import stat
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
    if "\\" not in text:
        plain = _plain_path_under_root(text, str(root))
        if plain is not None:  # the common case, settled with one lstat per component below the root
            return Path(plain)
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


def _plain_path_under_root(text: str, root: str) -> str | None:
    """``text`` joined to ``root`` when that names an existing entry below ``root`` reached through no symlink.

    Such a path needs none of ``resolve_path``'s further checks: it is inside the root (no ``..``, no symlink
    on the way) and it exists; its resolved form is itself. One ``lstat`` per component below the (already
    resolved) root. Anything else (``..``, a symlink anywhere below the root, a missing component, a path
    outside the root) returns None and takes the full checks.
    """
    if os.path.isabs(text):
        joined = text
        normal = os.path.normpath(text)
        prefix = root if root.endswith(os.sep) else root + os.sep
        if not normal.startswith(prefix) or normal.startswith(os.sep * 2):
            return None
        below = normal[len(prefix):]
    else:
        joined = os.path.join(root, text)
        below = text
    parts = [part for part in below.split(os.sep) if part and part != "."]
    if not parts or ".." in parts:
        return None
    current = root
    last = len(parts) - 1
    for i, part in enumerate(parts):
        current = os.path.join(current, part)
        try:
            mode = os.lstat(current).st_mode
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(mode) or (i < last and not stat.S_ISDIR(mode)):
            return None
    return joined


def _as_text(value: Any) -> str:
    if type(value) is str:
        return value.strip()
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
    """``path`` is ``root`` or below it (both absolute and normalized; compared as strings, component-wise)."""
    inner, outer = str(path), str(root)
    if inner == outer:
        return True
    prefix = outer if outer.endswith(os.sep) else outer + os.sep
    return inner.startswith(prefix)
