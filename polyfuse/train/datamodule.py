"""LightningDataModule over the prepared datasets, with epoch-seeded shuffling."""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from polyfuse.config import DataConfig


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a permutation that depends only on (seed, epoch).

    An interrupted run that resumes at epoch k therefore sees exactly the order an
    uninterrupted run saw. ``set_epoch`` (called by Lightning) also tells the dataset,
    whose augmentation is seeded by (seed, epoch, index).
    """

    def __init__(self, dataset: Any, seed: int, shuffle: bool = True) -> None:
        self.dataset = dataset
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        # (epoch, indices to drop): the next pass over that epoch starts there (a resumed, interrupted epoch)
        self.resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def generator(self) -> torch.Generator:
        """A torch generator seeded by ``seed`` (for the DataLoader's worker seeds)."""
        return torch.Generator().manual_seed(int(self.seed))

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n).tolist()
        else:
            order = list(range(n))
        if self.resume_at is not None:
            epoch, start = self.resume_at
            self.resume_at = None
            if epoch == self.epoch:
                order = order[start:]
        return iter(order)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose place inside an epoch goes into checkpoints, for exact mid-epoch resume.

    Lightning saves ``state_dict()`` with every checkpoint (a loader with ``state_dict`` /
    ``load_state_dict`` is "resumable" to it) and, when it restarts inside an epoch, calls
    ``load_state_dict`` before iterating again: the pass then skips the batches already
    trained on, so the rest of the epoch sees the batches an uninterrupted run would.
    Needs an ``EpochSeededSampler``; with another sampler (e.g. distributed) the epoch
    restarts from its beginning, as Lightning does by default.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0  # batches handed out in the current pass, counting skipped ones
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.sampler
        skip = 0
        if self._resume is not None and isinstance(sampler, EpochSeededSampler) and self.batch_size:
            if self._resume["epoch"] == sampler.epoch:
                skip = min(int(self._resume["batches"]), len(self))
                sampler.resume_at = (sampler.epoch, skip * int(self.batch_size))
        self._resume = None
        self.served = skip
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(getattr(self.sampler, "epoch", 0)), "batches": int(self.served)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


class _TaggedCollate:
    """Collate in a loader worker and tag the batch with that worker's id (for ``StreamLoader``'s order)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, examples: Any) -> tuple[int, Any]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return (info.id if info is not None else 0), self.collate(examples)


class StreamLoader(DataLoader):
    """A DataLoader over a ``ShardStream`` whose place inside an epoch goes into checkpoints.

    Each pass tells the stream its epoch (``epoch_of()``, the trainer's current epoch) and, after
    ``load_state_dict`` inside that epoch, how many batches were already served: the stream's
    workers then skip exactly their rows already trained on (see ``polyfuse.data.stream``). A
    resumed pass restarts the workers' turns at worker 0, so batches are tagged with their
    worker and handed out in the order the uninterrupted pass had.
    """

    def __init__(self, dataset: Any, *args: Any, epoch_of: Any = None, collate_fn: Any = None, **kwargs: Any) -> None:
        self._collate = collate_fn
        super().__init__(dataset, *args, collate_fn=_TaggedCollate(collate_fn) if collate_fn else None, **kwargs)
        self.epoch_of = epoch_of or (lambda: 0)
        self.served = 0
        self.epoch = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        from collections import deque

        from polyfuse.data.stream import round_robin

        self.epoch = int(self.epoch_of())
        self.dataset.set_epoch(self.epoch)  # type: ignore[attr-defined]
        skip = 0
        if self._resume is not None and self._resume["epoch"] == self.epoch:
            skip = min(int(self._resume["batches"]), len(self))
        self._resume = None
        self.dataset.resume_batches(skip)  # type: ignore[attr-defined]
        self.served = skip
        expected = deque(round_robin(self.dataset.worker_batches(max(1, self.num_workers)))[skip:])  # type: ignore[attr-defined]
        pending: dict[int, deque] = {}
        for worker, batch in super().__iter__():
            pending.setdefault(worker, deque()).append(batch)
            while expected and pending.get(expected[0]):
                self.served += 1
                yield pending[expected.popleft()].popleft()
        for worker in expected:  # cannot happen when the stream keeps its plan; never lose a batch
            if pending.get(worker):
                self.served += 1
                yield pending[worker].popleft()

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "batches": int(self.served)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}


class MultimodalDataModule(L.LightningDataModule):
    """Train / valid / test loaders from ``PreparedData``."""

    def __init__(self, datasets: dict[str, Any], collate_fn: Any, data: DataConfig, seed: int) -> None:
        super().__init__()
        self.datasets = datasets
        self.collate_fn = collate_fn
        self.cfg = data
        self.seed = seed
        self._train_loader: DataLoader | None = None
        self._resume: dict[str, int] | None = None  # where the interrupted epoch stopped (from a checkpoint)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        batch = self.cfg.batch_size if train else (self.cfg.eval_batch_size or self.cfg.batch_size)
        workers = self.cfg.num_workers
        if isinstance(dataset, IterableDataset):
            return self._stream_loader(dataset, batch, workers, train)
        sampler = EpochSeededSampler(dataset, self.seed, shuffle=train)
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=batch,
            sampler=sampler,
            collate_fn=self.collate_fn,
            num_workers=workers,
            persistent_workers=False,
            drop_last=False,
            # each iterator draws its workers' base seed from this generator, not from torch's global
            # RNG: otherwise every ``iter(loader)`` shifts the dropout stream, and a resumed run (which
            # creates its iterators in another order) would train differently from an uninterrupted one
            generator=sampler.generator(),
        )

    def _stream_loader(self, dataset: Any, batch: int, workers: int, train: bool) -> DataLoader:
        """Rows streamed from shards: the rank's part, pieces per worker cut at this batch size."""
        dataset.batch_size = batch
        trainer = getattr(self, "trainer", None)
        if train and trainer is not None:
            dataset.set_rank(trainer.global_rank, trainer.world_size)
        return (StreamLoader if train else DataLoader)(
            dataset, batch_size=batch, collate_fn=self.collate_fn, num_workers=workers, persistent_workers=False,
            drop_last=False, generator=torch.Generator().manual_seed(int(self.seed)),  # as in _loader: RNG untouched
            **({"epoch_of": lambda: trainer.current_epoch if trainer is not None else 0} if train else {}),
        )

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", True)
        if self._resume is not None:
            loader.load_state_dict(self._resume)
            self._resume = None
        self._train_loader = loader
        return loader

    # Lightning saves these with every checkpoint and restores them before it builds the loaders
    # (the loader's own state is restored too late: the optimizer's step count builds the loaders first)
    def state_dict(self) -> dict[str, Any]:
        loader = self._train_loader
        return {"train": loader.state_dict()} if isinstance(loader, (ResumableDataLoader, StreamLoader)) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = dict(state["train"]) if state.get("train") else None

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("valid", False) if "valid" in self.datasets else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", False) if "test" in self.datasets else []
