"""Which column is which input: roles inferred from the values (overridable), plus the problems seen.

Rules, in order: ``overrides`` win; the given label columns are ``label``; strings that
mostly end with a known file extension are files (image / audio / sequence for
``.npy .npz .csv .txt`` / video; an animated ``.gif`` is video); id-named columns with
unique values and row-number columns are ``id``; numbers are ``numeric`` (integers with at
most a few distinct values are ``categorical``); free text (several words, long strings,
many distinct values) is ``text``; other strings and booleans are ``categorical``; columns
that are empty or hold one value in every row are ``ignore``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.data.manifest import NUMERIC_NA_TOKENS, check_required_columns
from polyfuse.data.paths import resolve_path
from polyfuse.data.readers import (
    ARRAY_SUFFIXES,
    AUDIO_SUFFIXES,
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    frame_files,
    probe_file,
)
from polyfuse.errors import DataError

ROLES = ("image", "audio", "sequence", "video", "text", "categorical", "numeric", "label", "id", "ignore")
FILE_ROLES = ("image", "audio", "sequence", "video")
#: Roles that become their own entry of ``data.inputs`` (numeric/categorical share one tabular entry).
INPUT_ROLES = (*FILE_ROLES, "text")

#: File suffixes each file role reads (a folder of frames is a video too).
ROLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (*IMAGE_SUFFIXES, ".npy"),
    "audio": AUDIO_SUFFIXES,
    "sequence": ARRAY_SUFFIXES,
    "video": (*VIDEO_SUFFIXES, ".npy", ".png", ".webp", ".tif", ".tiff"),
}
KNOWN_SUFFIXES = frozenset(s for suffixes in ROLE_SUFFIXES.values() for s in suffixes)

INT_CATEGORY_MAX = 3  # integer columns with at most this many distinct values are categorical
CATEGORY_MAX = 20  # string columns with at most this many distinct values are categorical ...
CATEGORY_RATIO = 0.5  # ... or with distinct values at most this fraction of the rows
TEXT_MIN_WORDS = 3.0  # strings with this many words on average are free text
TEXT_MIN_CHARS = 30.0  # ... or this many characters
ID_WORDS = frozenset({"id", "ids", "idx", "index", "key", "uuid", "guid", "unnamed"})
_SUFFIX = re.compile(r"(\.[A-Za-z0-9]{1,5})$")
_EXAMPLES = 3
_EXAMPLE_CHARS = 60


@dataclass
class Problem:
    """Something wrong with one cell (``row`` set) or a whole column (``row`` None)."""

    row: int | None
    column: str | None
    file: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ColumnInfo:
    """What a column holds and why it got its role."""

    name: str
    role: str
    dtype: str
    missing: int
    unique: int
    examples: list[str]
    reason: str
    #: File columns checked: ``{"checked": n, "unreadable": k, "formats": {"28x28 L": n, ...}}``.
    files: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Schema:
    columns: dict[str, ColumnInfo]
    labels: list[str]
    problems: list[Problem] = field(default_factory=list)

    def columns_with(self, *roles: str) -> list[str]:
        """Columns whose role is one of ``roles``, in table order."""
        return [name for name, info in self.columns.items() if info.role in roles]

    def inputs(self) -> dict[str, dict]:
        """``data.inputs`` config entries: one per file/text column, one ``tabular`` for numbers and categories.

        Input names are the column names made safe for dotted overrides (``Review Text`` -> ``review_text``).
        """
        out: dict[str, dict] = {}
        for name in self.columns_with(*INPUT_ROLES):
            out[_unique_key(_safe_name(name, self.columns[name].role), out)] = {"kind": self.columns[name].role, "column": name}
        numeric, categorical = self.columns_with("numeric"), self.columns_with("categorical")
        if numeric or categorical:
            out[_unique_key("tabular", out)] = {"kind": "tabular", "numeric": numeric, "categorical": categorical}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "columns": [info.to_dict() for info in self.columns.values()],
            "labels": list(self.labels),
            "inputs": self.inputs(),
            "problems": [p.to_dict() for p in self.problems],
        }


def infer_schema(
    df: pd.DataFrame,
    root: Path,
    labels: Sequence[str] = (),
    overrides: Mapping[str, str] | None = None,
    sample: int | None = 200,
    check_files: bool = True,
    allow_outside_root: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Schema:
    """Infer every column's role from (a sample of) its values and record the problems found.

    ``sample`` rows, evenly spaced, are used to decide roles and (with ``check_files``)
    have their files resolved under ``root`` and checked; ``sample=None`` checks every row.
    """
    check_required_columns(df, labels)
    overrides = dict(overrides or {})
    _check_overrides(df, overrides)
    root = Path(root)
    positions = _sample_positions(len(df), sample)
    columns: dict[str, ColumnInfo] = {}
    problems: list[Problem] = []
    for name in df.columns:
        column = df[name]
        missing = missing_mask(column)
        present = column[~missing]
        sampled = column.iloc[positions][~missing.iloc[positions]]
        if name in overrides:
            role, reason = overrides[name], "set by override"
        elif name in labels:
            role, reason = "label", "label column"
        else:
            role, reason = _infer_role(str(name), column, present, sampled, root, check_files, allow_outside_root)
        info = ColumnInfo(
            name=str(name),
            role=role,
            dtype=str(column.dtype),
            missing=int(missing.sum()),
            unique=_count_unique(present),
            examples=_examples(present),
            reason=reason,
        )
        if role in FILE_ROLES and check_files:
            info.files = _check_files(str(name), role, sampled, root, allow_outside_root, max_pixels, problems)
        if role == "numeric":
            problems.extend(_numeric_problems(str(name), present))
        if role == "label":
            problems.extend(_label_problems(str(name), column, missing))
        if role == "ignore" and reason.startswith("file paths with an unknown"):
            problems.append(Problem(None, str(name), None, reason))
        columns[str(name)] = info
    return Schema(columns=columns, labels=[str(label) for label in labels], problems=problems)


# --------------------------------------------------------------------------- role inference


def _infer_role(
    name: str, column: pd.Series, present: pd.Series, sampled: pd.Series, root: Path, check_files: bool, allow_outside: bool
) -> tuple[str, str]:
    if present.empty:
        return "ignore", "every value is empty"
    if len(present) == len(column) > 1 and _count_unique(present) == 1:
        return "ignore", "the same value in every row"
    if pd.api.types.is_bool_dtype(column):
        return "categorical", "true/false values"
    if pd.api.types.is_datetime64_any_dtype(column) or pd.api.types.is_timedelta64_dtype(column):
        return "ignore", "dates and times are not read as inputs (derive numbers from them)"
    if pd.api.types.is_numeric_dtype(column):
        return _numeric_role(name, present, total=len(column))
    values = list(sampled) if len(sampled) else list(present.iloc[:200])
    if any(isinstance(v, (list, tuple, dict, np.ndarray)) for v in values):
        return "ignore", "values are lists or objects"
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return "categorical", "true/false values"
    texts = [str(v).strip() for v in values]
    file_role = _file_role(texts, root, check_files, allow_outside)
    if file_role is not None:
        return file_role
    strings = present.astype(str)
    numeric_share, leading_zeros = _numeric_share(strings)
    if numeric_share == 1.0 and not leading_zeros:
        return "numeric", "numbers written as text"
    if 0.9 <= numeric_share < 1.0:
        return "numeric", f"{numeric_share:.1%} numbers (the others are reported as problems)"
    unique = _count_unique(present)
    if _id_like_name(name) and unique == len(present) and not strings.str.contains(r"\s").any():
        return "id", "identifier-like name, every value distinct"
    if unique <= 2:
        return "categorical", f"{unique} distinct value{'s' if unique != 1 else ''}"
    words = float(np.mean([len(t.split()) for t in texts])) if texts else 0.0
    chars = float(np.mean([len(t) for t in texts])) if texts else 0.0
    if words >= TEXT_MIN_WORDS or chars >= TEXT_MIN_CHARS:
        return "text", f"free text (on average {words:.1f} words, {chars:.0f} chars)"
    if unique <= CATEGORY_MAX or unique <= CATEGORY_RATIO * len(present):
        return "categorical", f"{unique} distinct values in {len(present)} rows"
    return "text", f"short strings with many distinct values ({unique} in {len(present)} rows)"


def _numeric_role(name: str, present: pd.Series, total: int) -> tuple[str, str]:
    values = present.astype(np.float64)
    finite = values[np.isfinite(values)]
    integral = bool(len(finite)) and bool((finite == finite.round()).all())
    unique = int(values.nunique())
    if integral and unique == len(present) == total:
        ordered = np.sort(finite.to_numpy())
        if _id_like_name(name):
            return "id", "identifier-like name, every value distinct"
        if total > 2 and (np.array_equal(ordered, np.arange(total)) or np.array_equal(ordered, np.arange(1, total + 1))):
            return "id", "row numbers (0..N-1 or 1..N)"
    if integral and unique <= INT_CATEGORY_MAX:
        return "categorical", f"only {unique} distinct integer{'s' if unique != 1 else ''}"
    return "numeric", "numbers" + (" (integers)" if integral else "")


def _file_role(texts: list[str], root: Path, check_files: bool, allow_outside: bool) -> tuple[str, str] | None:
    """(role, reason) when most sampled values are file paths, else None."""
    if not texts:
        return None
    suffixes = [_value_suffix(t) for t in texts]
    roles = Counter(role for role in (_suffix_role(s) for s in suffixes) if role)
    if roles:
        role, count = roles.most_common(1)[0]
        if count * 2 >= len(texts):
            common = Counter(s for s in suffixes if _suffix_role(s) == role).most_common(3)
            shown = ", ".join(s for s, _ in common)
            if role == "gif":
                animated = check_files and _mostly_animated(texts, root, allow_outside)
                role = "video" if animated else "image"
                return role, f"file paths ending with .gif ({'animated' if animated else 'single'} frames)"
            return role, f"file paths ending with {shown}"
    pathlike = [t for t in texts if ("/" in t or "\\" in t) and not any(c.isspace() for c in t)]
    if pathlike and len(pathlike) * 2 >= len(texts):
        unknown = Counter(s for s in (_value_suffix(t) for t in pathlike) if s and s not in KNOWN_SUFFIXES)
        if unknown and sum(unknown.values()) * 2 >= len(pathlike):
            shown = ", ".join(s for s, _ in unknown.most_common(3))
            return "ignore", f"file paths with an unknown extension ({shown}); set its role with an override"
        if check_files and _mostly_frame_folders(pathlike, root, allow_outside):
            return "video", "paths of folders of frame images"
    return None


def _suffix_role(suffix: str) -> str | None:
    if not suffix:
        return None
    if suffix == ".gif":
        return "gif"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in AUDIO_SUFFIXES:
        return "audio"
    if suffix in ARRAY_SUFFIXES:
        return "sequence"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    return None


def _value_suffix(text: str) -> str:
    if len(text) > 4096 or "\n" in text:
        return ""
    match = _SUFFIX.search(text)
    return match.group(1).lower() if match else ""


def _mostly_animated(texts: list[str], root: Path, allow_outside: bool, limit: int = 10) -> bool:
    from PIL import Image

    animated = checked = 0
    for text in texts[:limit]:
        try:
            with Image.open(resolve_path(text, root, allow_outside_root=allow_outside)) as image:
                animated += int(getattr(image, "n_frames", 1) > 1)
                checked += 1
        except Exception:  # noqa: BLE001 - unreadable files are reported by the file check
            continue
    return checked > 0 and animated * 2 >= checked


def _mostly_frame_folders(texts: list[str], root: Path, allow_outside: bool, limit: int = 10) -> bool:
    folders = 0
    for text in texts[:limit]:
        try:
            path = resolve_path(text, root, allow_outside_root=allow_outside)
            folders += int(path.is_dir() and bool(frame_files(path)))
        except (DataError, OSError):
            continue
    return folders * 2 >= min(len(texts), limit)


def _numeric_share(strings: pd.Series) -> tuple[float, bool]:
    """Share of values that are numbers (NA-like texts not counted), and whether any has a leading zero (codes)."""
    text = strings.str.strip()
    text = text[~text.str.lower().isin(NUMERIC_NA_TOKENS)]
    if text.empty:
        return 0.0, False
    parsed = pd.to_numeric(text, errors="coerce")
    return float(parsed.notna().mean()), bool(text.str.match(r"^[+-]?0\d").any())


# --------------------------------------------------------------------------- checks


def _check_files(
    name: str, role: str, sampled: pd.Series, root: Path, allow_outside: bool, max_pixels: int, problems: list[Problem]
) -> dict[str, Any]:
    """Resolve and probe the sampled files of a file column; problems get row numbers."""
    formats: Counter[str] = Counter()
    checked = unreadable = 0
    accepted = ROLE_SUFFIXES[role]
    for row, value in sampled.items():
        text = str(value).strip()
        checked += 1
        suffix = _value_suffix(text)
        if suffix not in accepted and not (role == "video" and not suffix):
            known = f"{role} files end with {', '.join(accepted)}"
            reason = f"unknown file extension {suffix!r}" if suffix not in KNOWN_SUFFIXES else f"unexpected extension {suffix!r}"
            problems.append(Problem(int(row), name, text, f"{reason} ({known})"))
            unreadable += 1
            continue
        try:
            path = resolve_path(text, root, allow_outside_root=allow_outside)
            formats[probe_file(path, role, max_pixels=max_pixels)] += 1
        except DataError as exc:
            reason = exc.reason.removeprefix(f"{text!r}: ")  # the file is named in its own field
            problems.append(Problem(int(row), name, text, reason))
            unreadable += 1
        except Exception as exc:  # noqa: BLE001 - any failure on an untrusted file is a problem to report
            problems.append(Problem(int(row), name, text, f"cannot read ({type(exc).__name__}: {exc})"))
            unreadable += 1
    return {"checked": checked, "unreadable": unreadable, "formats": dict(formats.most_common(5))}


def _numeric_problems(name: str, present: pd.Series) -> list[Problem]:
    """Rows of a numeric column that are not finite numbers."""
    out: list[Problem] = []
    if pd.api.types.is_numeric_dtype(present):
        values = present.astype(np.float64)
        for row in values.index[np.isinf(values.to_numpy())]:
            out.append(Problem(int(row), name, None, f"infinite value {values[row]}"))
        return out
    text = present.astype(str).str.strip()
    text = text[~text.str.lower().isin(NUMERIC_NA_TOKENS)]
    numbers = pd.to_numeric(text, errors="coerce").astype(np.float64)
    for row in text.index[numbers.isna().to_numpy()]:
        out.append(Problem(int(row), name, None, f"not a number: {_short(text[row])!r}"))
    for row in text.index[np.isinf(numbers.to_numpy())]:
        out.append(Problem(int(row), name, None, f"infinite value {text[row]!r}"))
    return sorted(out, key=lambda p: p.row or 0)


def _label_problems(name: str, column: pd.Series, missing: pd.Series) -> list[Problem]:
    out: list[Problem] = []
    rows = [int(i) for i in column.index[missing.to_numpy()]]
    if rows:
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        out.append(Problem(None, name, None, f"{len(rows)} row{'s' if len(rows) > 1 else ''} without a label (rows {shown})"))
    present = column[~missing]
    if present.empty:
        return out
    if not looks_continuous(present):
        counts = Counter(_hashable(v) for v in present)
        if len(counts) == 1:
            out.append(Problem(None, name, None, f"only one class ({_short(str(next(iter(counts))))!r}): nothing to learn"))
        single = [str(k) for k, c in counts.items() if c == 1]
        if single and len(counts) > 1:
            shown = ", ".join(repr(_short(s)) for s in single[:10]) + (", ..." if len(single) > 10 else "")
            out.append(Problem(None, name, None, f"{len(single)} class{'es' if len(single) > 1 else ''} with a single row "
                                                 f"({shown}): it cannot appear in both train and test"))
    return out


def looks_continuous(values: pd.Series) -> bool:
    """A regression target: floats that are not all integers, or many distinct numbers."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    numbers = values.astype(np.float64)
    finite = numbers[np.isfinite(numbers)]
    return bool(len(finite)) and (not (finite == finite.round()).all() or finite.nunique() > 50)


def infer_task_type(column: pd.Series) -> str:
    """The task type of a label column: regression when it looks continuous, classification otherwise."""
    return "regression" if looks_continuous(column.dropna()) else "classification"


# --------------------------------------------------------------------------- helpers


def _check_overrides(df: pd.DataFrame, overrides: Mapping[str, str]) -> None:
    from polyfuse.config import ConfigError

    for column, role in overrides.items():
        if column not in df.columns:
            present = ", ".join(repr(str(c)) for c in df.columns)
            raise ConfigError(f"overrides.{column}: no such column; columns present: {present}")
        if role not in ROLES:
            raise ConfigError(f"overrides.{column}: unknown role {role!r}; allowed: {', '.join(ROLES)}")


def missing_mask(column: pd.Series) -> pd.Series:
    """True for empty cells: NaN/None/NA and blank strings."""
    mask = column.isna()
    if not pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        mask = mask | column.map(lambda v: isinstance(v, str) and not v.strip())
    return mask.astype(bool)


def _sample_positions(n: int, sample: int | None) -> np.ndarray:
    """Up to ``sample`` evenly spaced row positions (all rows when ``sample`` is None)."""
    if sample is None or n <= sample:
        return np.arange(n)
    if sample <= 0:
        raise ValueError(f"sample must be positive or None, got {sample}")
    return np.unique(np.linspace(0, n - 1, sample).round().astype(np.int64))


def _id_like_name(name: str) -> bool:
    """``id``, ``user_id``, ``sampleId``, ``row index``, ``Unnamed: 0`` (a saved pandas index)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name).lower()
    tokens = [t for t in re.split(r"[^a-z0-9]+", words) if t]
    return bool(tokens) and (tokens[0] in ID_WORDS or tokens[-1] in ID_WORDS)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return repr(value)


def _count_unique(values: pd.Series) -> int:
    try:
        return int(values.nunique(dropna=True))
    except TypeError:  # lists / dicts
        return len({repr(v) for v in values})


def _examples(values: pd.Series) -> list[str]:
    out: list[str] = []
    seen: set[Any] = set()
    for value in values:
        key = _hashable(value)
        if key in seen:
            continue
        seen.add(key)
        out.append(_short(str(value)))
        if len(out) == _EXAMPLES:
            break
    return out


def _short(text: str, limit: int = _EXAMPLE_CHARS) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Names a model part cannot take (attributes of torch's ModuleDict: ``model.heads["type"]`` fails).
RESERVED_NAMES = frozenset({
    "add_module", "apply", "bfloat16", "buffers", "children", "clear", "compile", "cpu", "cuda", "double",
    "eval", "float", "forward", "half", "items", "keys", "modules", "parameters", "pop", "state_dict", "to",
    "train", "training", "type", "update", "values", "zero_grad", "extra_repr", "ipu", "xpu", "mtia",
})


def safe_name(column: str, role: str) -> str:
    """A column name usable as a model part's name and in dotted overrides (``Review Text`` -> ``review_text``)."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", column).strip("_").lower()
    if not name:
        return role
    if name in RESERVED_NAMES:
        return f"{name}_{role}"
    return f"{role}_{name}" if name[0].isdigit() else name


_safe_name = safe_name


def _unique_key(name: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    if name not in taken:
        return name
    i = 2
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"
