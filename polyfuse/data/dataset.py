"""MultimodalDataset: the rows of one split as Examples, with cache, cleaning policy and augmentation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from polyfuse.config import AugmentConfig
from polyfuse.data.augment import modality_dropout
from polyfuse.data.pipeline import DataPipeline, Example
from polyfuse.data.processors.base import RowContext
from polyfuse.data.report import DataReport, check_policy


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

    # ------------------------------------------------------------------ reading
    def _context(self, position: int) -> RowContext:
        return RowContext(
            root=self.root, allow_outside_root=self.allow_outside_root, source=self.source,
            row=int(self.frame.index[position]), split=self.split,
        )

    def _encode(self, position: int, record: Any = None) -> Example:
        record = self.frame.iloc[position].to_dict() if record is None else record
        return self.pipeline.encode_row(record, self._context(position))

    def scan(self, progress: bool = True) -> "MultimodalDataset":
        """Read every row once (progress bar), record problems, apply the policy, fill the cache."""
        positions: list[int] = []
        cached: list[Example] = []
        records = self.frame.to_dict("records")
        for position in _track(range(len(records)), progress, f"reading {self.split} rows", len(records)):
            example = self._encode(position, records[position])
            keep = self.report.record(
                example.problems, split=self.split, row=example.row, file=self.source, policy=self.policy
            )
            if keep:
                positions.append(position)
                if self.cache:
                    cached.append(example)
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
            self.scan(progress=False)

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
            example = self._encode(self._positions[index])
            example.problems = []
        dropping = self.split == "train" and self.augment is not None and self.augment.modality_dropout > 0
        if not self.augmenting and not dropping:
            return example
        assert self.augment is not None
        example = example.copy()
        rng = np.random.default_rng([self.seed, self.epoch, max(example.row, 0)])
        if self.augmenting:
            for name, proc in self.pipeline.processors.items():
                arrays = example.inputs.get(name)
                if arrays is not None:
                    example.inputs[name] = proc.augment(arrays, rng, self.augment)
        present = [name for name, arrays in example.inputs.items() if arrays is not None]
        for name in modality_dropout(present, self.augment.modality_dropout, rng):
            example.inputs[name] = None
        return example

    def __repr__(self) -> str:
        n = "?" if self._positions is None else len(self._positions)
        return f"MultimodalDataset(split={self.split!r}, rows={n}, source={self.source!r})"


def _track(items: Any, progress: bool, description: str, total: int) -> Any:
    """Iterate with a rich progress bar when ``progress`` (and there is enough to show)."""
    if not progress or total < 2:
        return items
    from rich.progress import track

    return track(items, description=description, total=total, transient=True)
