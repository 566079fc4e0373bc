"""DataPipeline: the fitted processors and label encoders of a model; rows -> numpy batches. No torch."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from polyfuse.config import ConfigError, DataConfig, InputConfig, TaskConfig
from polyfuse.data.labels import LabelEncoder
from polyfuse.data.labels import encoder_from_state, has_vocabulary, make_encoder
from polyfuse.data.targets import TextTargetEncoder
from polyfuse.data.processors.base import EMPTY, INVALID, Arrays, FitContext, Processor, RowContext
from polyfuse.data.report import STAGE_INPUT, DataReport, Problem, check_policy
from polyfuse.errors import CheckpointError, DataError
from polyfuse.registry import PROCESSORS, RegistryError
from polyfuse.types import InputSpec

FORMAT = "polyfuse-pipeline"
VERSION = 1
FILE = "pipeline.json"


@dataclass
class Example:
    """One encoded row: arrays per input (None = missing), a target per task, its row number, its problems."""

    inputs: dict[str, Arrays | None]
    labels: dict[str, Any]
    row: int
    problems: list[Problem] = field(default_factory=list)

    def copy(self) -> "Example":
        """A copy whose arrays may be changed without touching this one (e.g. a cached row)."""
        inputs = {k: (None if v is None else {key: a.copy() for key, a in v.items()}) for k, v in self.inputs.items()}
        return Example(inputs, dict(self.labels), self.row, list(self.problems))


def build_processor(name: str, inp: InputConfig) -> Processor:
    """Construct the processor of ``data.inputs.<name>``; option errors name that key path."""
    path = f"data.inputs.{name}"
    try:
        entry = PROCESSORS.get(inp.kind)
    except RegistryError as exc:
        raise ConfigError(f"{path}.kind: {exc}") from None
    params = entry.parameters()
    unknown = [k for k in inp.options if k not in params]
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown option of {inp.kind} inputs; allowed: {', '.join(params)}")
    required = [k for k, p in params.items() if p.default is p.empty and k not in inp.options]
    if required:
        raise ConfigError(f"{path}.{required[0]}: required for {inp.kind} inputs")
    try:
        return entry.factory(**inp.options)
    except ConfigError as exc:
        raise ConfigError(f"{path}.{exc}") from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


class DataPipeline:
    """Processors (one per input) and label encoders (one per task), fitted on the training rows."""

    def __init__(
        self,
        processors: Mapping[str, Processor],
        labels: Mapping[str, LabelEncoder | TextTargetEncoder],
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.processors: dict[str, Processor] = dict(processors)
        self.labels: dict[str, LabelEncoder | TextTargetEncoder] = dict(labels)
        self.kinds = dict(kinds or {name: p.kind for name, p in self.processors.items()})

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        data: DataConfig,
        tasks: Mapping[str, TaskConfig],
        train: pd.DataFrame,
        *,
        root: Path,
        source: str,
        report: DataReport | None = None,
        progress: bool = False,
    ) -> "DataPipeline":
        """Build the processors of ``data.inputs`` (only ``data.use`` when set) and fit them on ``train``.

        Unreadable cells are skipped while fitting; they are recorded in the data report
        when the split is read (``MultimodalDataset.scan``), so ``report`` gets no
        entries here. ``progress`` shows a spinner while tokenizers train.
        """
        inputs = dict(data.inputs)
        if data.use is not None:
            unknown = [n for n in data.use if n not in inputs]
            if unknown:
                raise ConfigError(f"data.use: {unknown[0]!r} is not an input; allowed: {', '.join(inputs)}")
            inputs = {n: inputs[n] for n in data.use}
        if not inputs:
            raise ConfigError("data.inputs: no inputs (give data.inputs, or let polyfuse infer them from the manifest)")
        processors = {name: build_processor(name, inp) for name, inp in inputs.items()}
        labels = {}
        for tname, task in tasks.items():
            try:
                labels[tname] = make_encoder(task)
            except ConfigError as exc:
                raise ConfigError(f"tasks.{tname}.{exc}") from None
        needed = {c: f"input {n!r}" for n, p in processors.items() for c in p.columns}
        needed.update({enc.column: f"task {t!r}" for t, enc in labels.items()})
        absent = [c for c in needed if c not in train.columns]
        if absent:
            raise DataError(
                f"column(s) {', '.join(repr(c) + ' (' + needed[c] + ')' for c in absent)} not in the manifest; "
                f"columns present: {', '.join(map(str, train.columns))}",
                file=source,
            )
        ctx = FitContext(root=Path(root), allow_outside_root=data.allow_outside_root, source=source)
        status = _status(progress, "fitting preprocessing on the training rows")
        with status:
            for proc in processors.values():
                proc.fit(train, ctx)
            for tname, enc in labels.items():
                enc.fit(train[enc.column])
        for tname, enc in labels.items():
            if not has_vocabulary(enc):
                raise DataError(f"task {tname!r}: no labels in the training rows", file=source, column=enc.column)
        return cls(processors, labels, {n: inp.kind for n, inp in inputs.items()})

    # ------------------------------------------------------------------ what the model needs
    def specs(self) -> dict[str, InputSpec]:
        return {name: proc.spec(name) for name, proc in self.processors.items()}

    def task_dims(self) -> dict[str, int]:
        """Head width per task: classes / 1 regression target / labels / target vocabulary (generation)."""
        return {name: enc.dim for name, enc in self.labels.items()}

    def classes(self, task: str) -> list[Any]:
        if task not in self.labels:
            raise ConfigError(f"tasks.{task}: no such task; tasks: {', '.join(self.labels)}")
        return list(self.labels[task].classes)

    @property
    def columns(self) -> list[str]:
        """Manifest columns the inputs read."""
        return [c for p in self.processors.values() for c in p.columns]

    # ------------------------------------------------------------------ rows -> examples -> batches
    def encode_row(self, row: Mapping[str, Any], ctx: RowContext) -> Example:
        """Arrays per input and a target per task; problems collected instead of raised."""
        ctx = dataclasses.replace(ctx, notes=[])
        inputs: dict[str, Arrays | None] = {}
        problems: list[Problem] = []
        for name, proc in self.processors.items():
            try:
                arrays = proc.process(row, ctx)
            except DataError as exc:
                column = exc.column or (proc.columns[0] if proc.columns else None)
                problems.append(Problem(STAGE_INPUT, column, exc.reason, getattr(exc, "category", None) or INVALID, name))
                arrays = None
            else:
                if arrays is None:
                    column = ", ".join(proc.columns)
                    problems.append(Problem(STAGE_INPUT, column, "empty value", EMPTY, name))
            inputs[name] = arrays
        for note in ctx.notes:
            note.name = note.name or next((n for n, p in self.processors.items() if note.column in p.columns), None)
        problems.extend(ctx.notes)
        labels = {}
        for tname, enc in self.labels.items():
            if enc.column not in row:
                labels[tname] = enc.empty()
                continue
            labels[tname], problem = enc.encode(row[enc.column], tname)
            if problem is not None:
                problems.append(problem)
        row_id = int(ctx.row) if ctx.row is not None else -1
        return Example(inputs, labels, row_id, problems)

    def collate(self, examples: Sequence[Example]) -> dict[str, Any]:
        """Numpy batch in the layout of docs/architecture.md: inputs, present, labels, row."""
        return {
            "inputs": {n: p.collate([ex.inputs.get(n) for ex in examples]) for n, p in self.processors.items()},
            "present": {n: np.array([ex.inputs.get(n) is not None for ex in examples], dtype=bool) for n in self.processors},
            "labels": {t: enc.collate([ex.labels.get(t, enc.empty()) for ex in examples]) for t, enc in self.labels.items()},
            "row": np.array([ex.row for ex in examples], dtype=np.int64),
        }

    def batch_from_rows(
        self,
        rows: pd.DataFrame | Sequence[Mapping[str, Any]],
        *,
        root: Path | None = None,
        policy: str = "missing",
        allow_outside_root: bool = False,
        source: str | None = None,
    ) -> tuple[dict[str, Any], DataReport]:
        """Encode raw rows (dicts or a DataFrame; cells may hold file paths or uploaded bytes) into one batch.

        ``row`` in the batch is the position in ``rows``; with ``policy="skip"`` dropped rows are absent.
        """
        check_policy(policy)
        records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else [dict(r) for r in rows]
        report = DataReport()
        base = RowContext(root=Path(root) if root is not None else Path.cwd(), allow_outside_root=allow_outside_root, source=source)
        examples = []
        for i, record in enumerate(records):
            example = self.encode_row(record, dataclasses.replace(base, row=i))
            if report.record(example.problems, split=None, row=i, file=source, policy=policy):
                examples.append(example)
        return self.collate(examples), report

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "inputs": {
                name: {"kind": self.kinds.get(name, proc.kind), "options": proc.options, "state": proc.state_dict()}
                for name, proc in self.processors.items()
            },
            "tasks": {name: enc.state_dict() for name, enc in self.labels.items()},
        }

    def save(self, directory: str | Path) -> None:
        """``directory/pipeline.json`` plus tokenizer JSON files. JSON only, never pickles."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state_dict()
        for name, proc in self.processors.items():
            state["inputs"][name]["files"] = proc.save_files(directory, name)
        text = json.dumps(_jsonable(state), indent=2, ensure_ascii=False, allow_nan=False)
        tmp = directory / (FILE + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(directory / FILE)

    @classmethod
    def load(cls, directory: str | Path) -> "DataPipeline":
        directory = Path(directory)
        path = directory / FILE
        if not path.is_file():
            raise CheckpointError(f"{directory}: no {FILE} (not a saved polyfuse data pipeline)")
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
        if state.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a polyfuse pipeline file")
        import polyfuse.data.processors  # noqa: F401  (registrations)

        processors: dict[str, Processor] = {}
        kinds: dict[str, str] = {}
        for name, entry in state["inputs"].items():
            proc = build_processor(name, InputConfig(entry["kind"], dict(entry["options"])))
            proc.load_state_dict(entry.get("state", {}))
            proc.load_files(directory, name)
            processors[name], kinds[name] = proc, entry["kind"]
        labels = {name: encoder_from_state(s) for name, s in state.get("tasks", {}).items()}
        return cls(processors, labels, kinds)

    def __repr__(self) -> str:
        return f"DataPipeline(inputs={self.kinds}, tasks={list(self.labels)})"


class _Quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _status(progress: bool, message: str) -> Any:
    """A rich spinner while fitting (nothing when ``progress`` is off)."""
    if not progress:
        return _Quiet()
    from rich.console import Console

    return Console(stderr=True).status(message)
