"""Read a manifest table (CSV / TSV / Parquet / JSONL): one row per example.

Row order is kept and the index is ``0..N-1``: the row numbers in every message are these
0-based data-row indices. Text stays text (``"NA"`` or ``"None"`` in a text column are
values, not missing); only genuinely empty cells are missing. CSV/TSV columns whose values
are all numbers (or empty / ``NA``-like) are read as numbers.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np
import pandas as pd

from polyfuse.errors import DataError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")
#: Compressed text manifests (``rows.csv.gz``) are read too.
COMPRESSION_SUFFIXES: dict[str, Callable[..., IO[Any]]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: Cell texts that mean "missing" in a column that is otherwise numeric (compared lower-cased).
NUMERIC_NA_TOKENS = frozenset({"na", "n/a", "nan", "null", "none", "-", "?", "#n/a"})

_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_LEADING_ZERO = re.compile(r"^[+-]?0\d")  # "007", "01234": identifiers, keep as text
_PLAIN_INT = re.compile(r"^\s*[+-]?\d+\s*$")


def manifest_format(path: str | Path) -> str:
    """``csv``, ``tsv``, ``parquet`` or ``jsonl`` from the file name; DataError for anything else."""
    suffix = _table_suffix(Path(path))
    formats = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
    if suffix not in formats:
        allowed = ", ".join(MANIFEST_SUFFIXES)
        raise DataError(f"unknown manifest type {suffix or '(no suffix)'!r}; expected one of {allowed} "
                        f"(text formats may be compressed: {', '.join(COMPRESSION_SUFFIXES)})", file=str(path))
    return formats[suffix]


#: Recently parsed manifests, keyed by (resolved path, mtime, size): planning a table, preparing its
#: splits and cutting folds read the same file, and it is parsed once. Small files only, few of them.
_RECENT: "OrderedDict[tuple[str, int, int], pd.DataFrame]" = OrderedDict()
RECENT_MAX_FILES = 4
RECENT_MAX_BYTES = 64 * 1024 * 1024


def read_manifest(path: str | Path, required_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Read a manifest into a DataFrame with a RangeIndex; DataError names the file (and line/row) on problems.

    An unchanged file read again is not parsed again (a copy of the first parse is returned)."""
    path = Path(path)
    name = str(path)
    fmt = manifest_format(path)
    if not path.exists():
        raise DataError("manifest file not found", file=name)
    if path.is_dir():
        raise DataError("is a directory, not a manifest file", file=name)
    stat = path.stat()
    if stat.st_size == 0:
        raise DataError("empty file (0 bytes)", file=name)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _RECENT:
        _RECENT.move_to_end(key)
        frame = _RECENT[key].copy()
    else:
        frame = _parse(path, fmt, name)
        if stat.st_size <= RECENT_MAX_BYTES:
            _RECENT[key] = frame.copy()
            while len(_RECENT) > RECENT_MAX_FILES:
                _RECENT.popitem(last=False)
    check_required_columns(frame, required_columns, file=name)
    return frame


def _parse(path: Path, fmt: str, name: str) -> pd.DataFrame:
    if fmt in ("csv", "tsv"):
        frame = _read_delimited(path, "," if fmt == "csv" else "\t")
    elif fmt == "parquet":
        frame = _read_parquet(path)
    else:
        frame = _read_jsonl(path)

    if frame.shape[1] == 0:
        raise DataError("no columns found", file=name)
    if len(frame) == 0:
        raise DataError(f"has a header but no data rows (columns: {_names(frame.columns)})", file=name)
    return frame.reset_index(drop=True)


def check_required_columns(frame: pd.DataFrame, required: Sequence[str], file: str | None = None) -> None:
    """DataError naming the missing columns and listing the ones present."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"missing required column{'s' if len(missing) > 1 else ''} {_names(missing)}; "
            f"columns present: {_names(frame.columns)}",
            file=file,
        )


# --------------------------------------------------------------------------- formats


def _read_delimited(path: Path, sep: str) -> pd.DataFrame:
    name = str(path)
    options: dict[str, Any] = {"sep": sep, "encoding": "utf-8-sig", "dtype": str, "keep_default_na": False, "na_filter": False}
    try:
        header = pd.read_csv(path, header=None, nrows=1, **options)
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise DataError("empty file (no header line)", file=name) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"cannot parse {_DELIMITERS[sep]}-separated text: {_parser_message(exc)}", file=name) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8", file=name) from None
    except (OSError, EOFError) as exc:  # compressed file cut short, unreadable file
        raise DataError(f"cannot read: {exc}", file=name) from None

    _check_delimiter(list(frame.columns), sep, path)
    raw_names = [str(v) for v in header.iloc[0].tolist()] if len(header) else []
    _check_duplicates(raw_names, name)
    for column in frame.columns:
        frame[column] = _parse_text_column(frame[column])
    return frame


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = str(path)
    try:
        with pq.ParquetFile(path) as parquet:
            _check_duplicates(list(parquet.schema_arrow.names), name)
            table = parquet.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", file=name) from None
    frame = table.to_pandas()
    for column in frame.columns:
        if _is_text(frame[column]):
            frame[column] = _blank_to_missing(frame[column])
    return frame


def _read_jsonl(path: Path) -> pd.DataFrame:
    name = str(path)
    records: list[dict[str, Any]] = []
    try:
        with _open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {line_no}: invalid JSON ({exc.msg} at column {exc.colno})", file=name) from None
                except _DuplicateKey as exc:
                    raise DataError(f"line {line_no}: duplicated column name {str(exc)!r}", file=name) from None
                if not isinstance(record, dict):
                    raise DataError(f"line {line_no}: expected a JSON object per line, got {type(record).__name__}", file=name)
                records.append(record)
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8", file=name) from None
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read: {exc}", file=name) from None
    if not records:
        raise DataError("empty file (no JSON lines)", file=name)
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        frame[column] = _parse_json_column(frame[column])
    return frame


# --------------------------------------------------------------------------- column typing


def _parse_text_column(column: pd.Series) -> pd.Series:
    """A column read as text: numbers when every non-empty value is a number (or NA-like), else text."""
    numbers = _as_numbers(column)
    if numbers is not None:
        return numbers
    return _blank_to_missing(column)


def _parse_json_column(column: pd.Series) -> pd.Series:
    """JSON values are typed already; a column mixing numbers with NA-like strings becomes numbers."""
    if column.dtype != object:
        return _blank_to_missing(column) if _is_text(column) else column
    values = column.dropna()
    if values.empty or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
        return column  # lists, objects, booleans: kept as they are
    if all(isinstance(v, str) for v in values):
        return _blank_to_missing(column)
    as_text = column.map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    numbers = _as_numbers(as_text.fillna(""))
    return numbers if numbers is not None else _blank_to_missing(as_text)


def _as_numbers(column: pd.Series) -> pd.Series | None:
    """Numeric version of a text column, or None when some value is not a number."""
    text = column.astype(str).str.strip()
    na = (text == "") | text.str.lower().isin(NUMERIC_NA_TOKENS)
    values = text[~na]
    if values.empty or values.str.match(_LEADING_ZERO).any():
        return None
    parsed = pd.to_numeric(values, errors="coerce")
    if parsed.isna().any():
        return None
    if values.str.match(_PLAIN_INT).all():
        ints = pd.to_numeric(values, errors="coerce")
        if not na.any() and pd.api.types.is_integer_dtype(ints):
            return ints.astype(np.int64).reindex(column.index)
    out = pd.Series(np.nan, index=column.index, dtype=np.float64, name=column.name)
    out[~na] = parsed.astype(np.float64)
    return out


def _blank_to_missing(column: pd.Series) -> pd.Series:
    """Empty strings become missing (NaN); any other text is kept exactly."""
    blank = column.map(lambda v: isinstance(v, str) and v == "")
    if not blank.any():
        return column
    column = column.copy()
    column[blank] = np.nan
    return column


def _is_text(column: pd.Series) -> bool:
    if pd.api.types.is_object_dtype(column):
        return all(isinstance(v, str) for v in column.dropna())
    return pd.api.types.is_string_dtype(column)


# --------------------------------------------------------------------------- checks and helpers


def _check_delimiter(columns: list[str], sep: str, path: Path) -> None:
    """A single column whose name holds another delimiter: the file uses that delimiter."""
    if len(columns) != 1:
        return
    header = str(columns[0])
    for delim, label in _DELIMITERS.items():
        if delim != sep and delim in header:
            if delim == "\t":
                fix = "rename it to .tsv"
            elif delim == ",":
                fix = "rename it to .csv"
            else:
                fix = "save it comma-separated (.csv) or tab-separated (.tsv)"
            raise DataError(
                f"has a single column {header!r}: it looks {label}-separated ({delim!r}), "
                f"not {_DELIMITERS[sep]}-separated; {fix}",
                file=str(path),
            )


def _check_duplicates(names: list[str], file: str) -> None:
    seen: set[str] = set()
    duplicated = [n for n in names if n in seen or seen.add(n)]  # type: ignore[func-returns-value]
    if duplicated:
        raise DataError(f"duplicated column names {_names(dict.fromkeys(duplicated))}; every column needs its own name",
                        file=file)


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _open_text(path: Path) -> IO[str]:
    opener = COMPRESSION_SUFFIXES.get(path.suffix.lower())
    if opener is not None:
        return opener(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def _table_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION_SUFFIXES and suffixes[-2] in (".csv", ".tsv", ".jsonl", ".ndjson"):
        return suffixes[-2]
    return suffixes[-1] if suffixes else ""


def _parser_message(exc: Exception) -> str:
    text = str(exc).strip().replace("Error tokenizing data. C error: ", "")
    return text + (" (a quote may be left open)" if "EOF inside string" in text else "")


def _names(names: Any) -> str:
    return ", ".join(repr(str(n)) for n in names)
