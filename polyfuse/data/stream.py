"""ShardStream: the rows of one split streamed from webdataset shards, with bounded memory.

Which rows a reader sees is planned, not left to chance, so that training is exactly resumable
and every DDP rank and DataLoader worker reads a disjoint part of the epoch:

1. Per epoch the shard order is a permutation seeded by (seed, epoch) (training; in order otherwise),
   and the rows of the shards in that order form one sequence of positions 0..N-1.
2. Rank r of R takes the contiguous positions [r * P, (r + 1) * P) with P = ceil(N / R); a
   last rank that falls short wraps around to the start (as torch's DistributedSampler pads),
   so every rank runs the same number of steps. When R divides N the parts are disjoint and
   their union is the epoch.
3. Worker w of W takes a contiguous piece of its rank's part, cut at batch boundaries, so the
   loader's batch count is ceil(P / batch) whatever W is. A worker opens only the shards its
   piece overlaps.
4. Within a piece, rows pass through a shuffle buffer (``data.shuffle_buffer`` raw samples,
   seeded by (seed, epoch, rank, worker)); decoding happens after the buffer, so skipped or
   buffered rows cost no decode.
5. ``resume_batches(b)``: the loader served b batches of this epoch before an interruption. The
   DataLoader takes batches from its workers in turn, so each worker's share of b is known and
   each skips exactly its rows already trained on (raw samples, not decoded).

Memory holds the shard index, one buffer per worker and the batches in flight: flat in the row count.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from polyfuse.config import AugmentConfig
from polyfuse.data.dataset import augment_example
from polyfuse.data.pipeline import DataPipeline, Example
from polyfuse.data.processors.base import RowContext
from polyfuse.data.shards import ShardIndex, sample_record


def worker_pieces(n: int, batch_size: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) of ``n`` positions per worker, cut at multiples of ``batch_size``."""
    batches = math.ceil(n / batch_size) if n else 0
    cuts = [min(n, (batches * w // workers) * batch_size) for w in range(workers + 1)]
    cuts[-1] = n
    return [(cuts[w], cuts[w + 1]) for w in range(workers)]


def round_robin(counts: list[int]) -> list[int]:
    """The worker each batch of a pass comes from, given each worker's batch count.

    The DataLoader asks its workers in turn (0, 1, ..., W-1, 0, ...) and passes over an exhausted one.
    """
    order = []
    for r in range(max(counts, default=0)):
        order += [w for w, count in enumerate(counts) if r < count]
    return order


def served_per_worker(batches: int, counts: list[int]) -> list[int]:
    """How many of the first ``batches`` batches of a pass each worker produced."""
    taken = [0] * len(counts)
    for worker in round_robin(counts)[:batches]:
        taken[worker] += 1
    return taken


class ShardStream(IterableDataset):
    """Examples of one split of a shard directory, planned per (epoch, rank, worker); see the module doc."""

    def __init__(
        self,
        directory: str | Path,
        pipeline: DataPipeline,
        *,
        split: str,
        shuffle: bool,
        batch_size: int,
        seed: int = 0,
        buffer: int = 1000,
        augment: AugmentConfig | None = None,
        limit: int | None = None,
    ) -> None:
        self.index = ShardIndex.load(directory)
        self.pipeline = pipeline
        self.split = split
        self.shuffle = shuffle
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.buffer = max(1, int(buffer))
        self.augment = augment
        self.epoch = 0
        self.rank, self.world = 0, 1
        self._resume_batches = 0
        self.source = self.index.source
        self.root = Path(directory)
        # the split's shards in index order; ``limit`` keeps the first rows (the same ones every epoch)
        self._urls, self._counts = [], []
        left = None if limit is None else int(limit)
        for url, count in zip(self.index.urls(split), self.index.counts(split)):
            if left is not None:
                if left <= 0:
                    break
                count = min(count, left)
                left -= count
            self._urls.append(url)
            self._counts.append(count)

    # ------------------------------------------------------------------ the plan
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_rank(self, rank: int, world: int) -> None:
        """Read rank ``rank`` of ``world``'s part (training only; evaluation reads every row)."""
        self.rank, self.world = int(rank), max(1, int(world))

    def resume_batches(self, batches: int) -> None:
        """The next pass skips the first ``batches`` batches of this epoch (a resumed, interrupted run)."""
        self._resume_batches = int(batches)

    @property
    def total(self) -> int:
        return sum(self._counts)

    def _ranked(self) -> bool:
        return self.shuffle and self.world > 1

    def __len__(self) -> int:
        """Rows this rank reads per epoch."""
        n = self.total
        return math.ceil(n / self.world) if self._ranked() else n

    def _rank_positions(self) -> tuple[int, int, int]:
        """(start, stop, wrap): this rank's positions; ``wrap`` more are taken from the epoch's start."""
        n = self.total
        if not self._ranked():
            return 0, n, 0
        per = math.ceil(n / self.world)
        start = min(n, self.rank * per)
        stop = min(n, start + per)
        return start, stop, per - (stop - start)

    def _shard_order(self) -> list[int]:
        count = len(self._counts)
        if not self.shuffle:
            return list(range(count))
        return np.random.default_rng([self.seed, self.epoch]).permutation(count).tolist()

    def _segments(self, start: int, stop: int) -> list[tuple[str, int, int]]:
        """(shard url, first row, end row) covering epoch positions [start, stop) in this epoch's shard order."""
        urls, counts = self._urls, self._counts
        segments = []
        offset = 0
        for shard in self._shard_order():
            n = counts[shard]
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                segments.append((urls[shard], lo - offset, hi - offset))
            offset += n
        return segments

    def _piece(self, worker: int, workers: int) -> list[tuple[str, int, int]]:
        start, stop, wrap = self._rank_positions()
        positions = (stop - start) + wrap
        lo, hi = worker_pieces(positions, self.batch_size, workers)[worker]
        # the rank's positions are [start, stop) then [0, wrap): map the piece onto them
        segments = []
        own = stop - start
        if lo < own:
            segments += self._segments(start + lo, start + min(hi, own))
        if hi > own:
            segments += self._segments(max(0, lo - own), hi - own)
        return segments

    def worker_batches(self, workers: int) -> list[int]:
        """Batches each of ``workers`` loader workers yields per epoch (for the resume arithmetic)."""
        start, stop, wrap = self._rank_positions()
        pieces = worker_pieces((stop - start) + wrap, self.batch_size, workers)
        return [math.ceil((b - a) / self.batch_size) for a, b in pieces]

    # ------------------------------------------------------------------ reading
    def _raw(self, segments: list[tuple[str, int, int]]) -> Iterator[dict[str, Any]]:
        from webdataset.tariterators import tarfile_samples

        for url, first, end in segments:
            for i, sample in enumerate(tarfile_samples([{"url": url}])):
                if i >= end:
                    break
                if i >= first:
                    yield sample

    def _buffered(self, samples: Iterator[dict[str, Any]], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        if not self.shuffle or self.buffer <= 1:
            yield from samples
            return
        pool: list[dict[str, Any]] = []
        for sample in samples:
            if len(pool) < self.buffer:
                pool.append(sample)
                continue
            i = int(rng.integers(len(pool)))
            pool[i], sample = sample, pool[i]
            yield sample
        order = rng.permutation(len(pool))
        for i in order:
            yield pool[int(i)]

    def __iter__(self) -> Iterator[Example]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        skip_batches = served_per_worker(self._resume_batches, self.worker_batches(workers))[worker]
        self._resume_batches = 0
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        stream = self._buffered(self._raw(self._piece(worker, workers)), rng)
        skip = skip_batches * self.batch_size
        for i, sample in enumerate(stream):
            if i < skip:
                continue
            example = self._encode(sample)
            if self.augment is not None:
                example = augment_example(example, self.pipeline, self.augment, seed=self.seed, epoch=self.epoch)
            yield example

    def _encode(self, sample: dict[str, Any]) -> Example:
        row, record = sample_record(sample, self.index.file_columns)
        example = self.pipeline.encode_row(record, RowContext(root=self.root, source=self.source, row=row, split=self.split))
        example.problems = []  # recorded in the data report while sharding
        return example

    def sample(self, n: int) -> list[Example]:
        """About ``n`` rows of the split for fitting on, the first rows of every shard (rows spread over the
        shards, never augmented); the epoch plan, the rank's part and a pending resume are left as they are."""
        n = max(0, int(n))
        per_shard = math.ceil(n / max(1, len(self._urls)))
        segments = [(url, 0, min(count, per_shard)) for url, count in zip(self._urls, self._counts)]
        return [self._encode(sample) for sample in itertools.islice(self._raw(segments), n)]  # decode only the n kept

    # ------------------------------------------------------------------ what the trainer asks of a split
    def task_labels(self, task: str) -> np.ndarray:
        """Encoded training labels of a scalar task (written while sharding), for class weights and target scaling."""
        from polyfuse.data.shards import LABELS
        from polyfuse.errors import DataError

        with np.load(self.root / LABELS, allow_pickle=False) as data:
            if task not in data.files:
                raise DataError(f"task {task!r}: no stored training labels in the shards", file=str(self.root / LABELS))
            return np.asarray(data[task])

    def __repr__(self) -> str:
        return f"ShardStream(split={self.split!r}, rows={self.total}, root={str(self.root)!r})"


__all__ = ["ShardStream", "worker_pieces", "served_per_worker", "round_robin"]
