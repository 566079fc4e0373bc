"""MultimodalDataset: the rows of one split as Examples, with cache, cleaning policy and augmentation."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from polyfuse.config import AugmentConfig
from polyfuse.data.augment import modality_dropout
from polyfuse.data.pipeline import DataPipeline, Example
from polyfuse.data.processors.base import RowContext
from polyfuse.data.report import DataReport, Problem, check_policy


class MultimodalDataset(Dataset):
    """Rows of one split encoded by a fitted pipeline.

    ``scan()`` reads every row once: it records problems in ``report``, applies the
    policy (``skip`` removes rows, ``error`` raises) and, with ``cache``, keeps the
    encoded rows in memory. Items are Examples; on the training split with
    ``augment.enabled`` they are augmented with a generator seeded by
    (seed, epoch, row), and ``augment.modality_dropout`` (on its own, enabled or not)
    marks some present modalities missing (never all of a row). Row numbers are ``frame.index`` (the rows of ``source``).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        pipeline: DataPipeline,
        *,
        split: str,
        root: Path,
        source: str | None = None,
        policy: str = "missing",
        report: DataReport | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        cache: bool = True,
        allow_outside_root: bool = False,
        lazy: bool = False,
    ) -> None:
        self.frame = frame
        self.pipeline = pipeline
        self.split = split
        self.root = Path(root)
        self.source = source
        self.policy = check_policy(policy)
        self.report = report if report is not None else DataReport()
        self.augment = augment
        self.seed = int(seed)
        self.cache = cache
        self.allow_outside_root = allow_outside_root
        self.epoch = 0
        self._positions: list[int] | None = None  # kept rows (positions in frame)
        self._cached: list[Example] = []
        # the kept rows' cells that encoding reads (one list per column) and their row numbers, for reads
        # without the row cache: no DataFrame row lookups, no columns the pipeline does not read
        self._cells: dict[str, list[Any]] = {}
        self._row_numbers = np.zeros(0, dtype=np.int64)
        # lazy: no up-front pass and no cache; rows' problems go to one file per reading process, merged
        # into ``report`` by ``collect_problems`` (loader workers cannot write the main process's report)
        self.lazy = lazy
        self._problem_dir: Path | None = Path(tempfile.mkdtemp(prefix="polyfuse-problems-")) if lazy else None
        # rows whose problems are already in a file, as known by process ``_noted_pid`` (a new loader worker
        # reads the files once): a row read again, in a later epoch or another worker, is not written again
        self._noted: set[int] = set()
        self._noted_pid: int | None = None
        if lazy:
            self.cache = False

    # ------------------------------------------------------------------ reading
    def _context(self, row: int) -> RowContext:
        return RowContext(
            root=self.root, allow_outside_root=self.allow_outside_root, source=self.source, row=row, split=self.split,
        )

    def columns_read(self) -> list[str]:
        """The manifest columns encoding reads (the inputs' and the tasks'), those the frame has."""
        wanted = [*self.pipeline.columns, *(enc.column for enc in self.pipeline.labels.values())]
        present = set(self.frame.columns)
        return [c for c in dict.fromkeys(wanted) if c in present]

    def _encode_kept(self, index: int) -> Example:
        """Encode kept row ``index`` again from its cells (kept by ``scan``)."""
        record = {column: cells[index] for column, cells in self._cells.items()}
        return self.pipeline.encode_row(record, self._context(int(self._row_numbers[index])))

    def scan(self, progress: bool = True) -> "MultimodalDataset":
        """Read every row once (progress bar), record problems, apply the policy, fill the cache."""
        positions: list[int] = []
        cached: list[Example] = []
        columns = self.columns_read()
        records = self.frame[columns].to_dict("records")
        row_numbers = [int(r) for r in self.frame.index]
        for position in _track(range(len(records)), progress, f"reading {self.split} rows", len(records)):
            example = self.pipeline.encode_row(records[position], self._context(row_numbers[position]))
            keep = self.report.record(
                example.problems, split=self.split, row=example.row, file=self.source, policy=self.policy
            )
            if keep:
                positions.append(position)
                if self.cache:
                    cached.append(example)
        self._cells = {column: [records[p][column] for p in positions] for column in columns}
        self._row_numbers = np.array([row_numbers[p] for p in positions], dtype=np.int64)
        self._positions, self._cached = positions, cached
        return self

    @property
    def rows(self) -> list[int]:
        """Row numbers (in ``source``) of the kept rows, in order."""
        self._ensure_scanned()
        assert self._positions is not None
        return [int(self.frame.index[p]) for p in self._positions]

    def _ensure_scanned(self) -> None:
        if self._positions is None:
            if self.lazy:
                self._keep_all()
            else:
                self.scan(progress=False)

    def _keep_all(self) -> None:
        """Lazy reading: every row is kept, its cells held by column; nothing is decoded."""
        columns = self.columns_read()
        self._cells = {column: self.frame[column].tolist() for column in columns}
        self._row_numbers = np.asarray(self.frame.index, dtype=np.int64)
        self._positions = list(range(len(self.frame)))

    def _note_problems(self, example: Example) -> None:
        """Lazy reading: ``error`` raises at the row; other problems are appended to this process's file."""
        if self.policy == "error":
            DataReport().record(example.problems, split=self.split, row=example.row, file=self.source, policy="error")
        assert self._problem_dir is not None
        if self._noted_pid != os.getpid():  # first problem in this process: the rows earlier processes wrote
            self._noted = self._rows_noted()
            self._noted_pid = os.getpid()
        if example.row in self._noted:
            return
        line = json.dumps({"row": example.row, "problems": [p.to_dict() for p in example.problems]})
        with open(self._problem_dir / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self._noted.add(example.row)

    def _rows_noted(self) -> set[int]:
        """The rows already in this dataset's problem files (whole lines only: a file may be being appended)."""
        assert self._problem_dir is not None
        rows: set[int] = set()
        for path in self._problem_dir.glob("*.jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rows.add(int(json.loads(line)["row"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line another process is writing
        return rows

    def task_labels(self, task: str) -> np.ndarray:
        """One task's encoded labels over the kept rows, from the cells (no file is decoded)."""
        self._ensure_scanned()
        encoder = self.pipeline.labels[task]
        cells = self._cells.get(encoder.column)
        if cells is None:
            return np.asarray([encoder.empty() for _ in range(len(self))])
        return np.asarray([encoder.encode(value, task)[0] for value in cells])

    def collect_problems(self) -> int:
        """Lazy reading: record the problems of the rows read so far in ``report`` (each row once); their count."""
        if self._problem_dir is None or not self._problem_dir.is_dir():
            return 0
        found: dict[int, list[Problem]] = {}
        for path in sorted(self._problem_dir.glob("*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                found.setdefault(int(entry["row"]), [Problem(**p) for p in entry["problems"]])
        for row in sorted(found):
            self.report.record(found[row], split=self.split, row=row, file=self.source, policy=self.policy)
        shutil.rmtree(self._problem_dir, ignore_errors=True)
        self._problem_dir, self._noted, self._noted_pid = None, set(), None
        return len(found)

    def __len__(self) -> int:
        self._ensure_scanned()
        assert self._positions is not None
        return len(self._positions)

    def set_epoch(self, epoch: int) -> None:
        """Augmentation of the next pass depends on this epoch number."""
        self.epoch = int(epoch)

    @property
    def augmenting(self) -> bool:
        return self.split == "train" and self.augment is not None and self.augment.enabled

    def __getitem__(self, index: int) -> Example:
        self._ensure_scanned()
        assert self._positions is not None
        if self.cache:
            example = self._cached[index]
        else:
            example = self._encode_kept(index)
            if self.lazy and example.problems and self._problem_dir is not None:
                self._note_problems(example)
            example.problems = []
        if self.split != "train" or self.augment is None:
            return example
        return augment_example(example, self.pipeline, self.augment, seed=self.seed, epoch=self.epoch)

    def __repr__(self) -> str:
        n = "?" if self._positions is None else len(self._positions)
        return f"MultimodalDataset(split={self.split!r}, rows={n}, source={self.source!r})"


def augment_example(example: Example, pipeline: DataPipeline, augment: AugmentConfig, *, seed: int, epoch: int) -> Example:
    """A training row augmented (``augment.enabled``) and with some inputs dropped (``modality_dropout``).

    The random choices come from a generator seeded by (seed, epoch, row); ``example`` is left
    untouched (it may be a cached row). Returned as is when neither applies.
    """
    if not augment.enabled and augment.modality_dropout <= 0:
        return example
    example = example.copy()
    rng = np.random.default_rng([seed, epoch, max(example.row, 0)])
    if augment.enabled:
        for name, proc in pipeline.processors.items():
            arrays = example.inputs.get(name)
            if arrays is not None:
                example.inputs[name] = proc.augment(arrays, rng, augment)
    present = [name for name, arrays in example.inputs.items() if arrays is not None]
    for name in modality_dropout(present, augment.modality_dropout, rng):
        example.inputs[name] = None
    return example


def _track(items: Any, progress: bool, description: str, total: int) -> Any:
    """Iterate with a rich progress bar when ``progress`` (and there is enough to show)."""
    if not progress or total < 2:
        return items
    from rich.progress import track

    return track(items, description=description, total=total, transient=True)
