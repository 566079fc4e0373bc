"""LightningDataModule over the prepared datasets, with epoch-seeded shuffling."""

from __future__ import annotations

from typing import Any, Iterator

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Sampler

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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return iter(range(n))
        rng = np.random.default_rng([self.seed, self.epoch])
        return iter(rng.permutation(n).tolist())


class MultimodalDataModule(L.LightningDataModule):
    """Train / valid / test loaders from ``PreparedData``."""

    def __init__(self, datasets: dict[str, Any], collate_fn: Any, data: DataConfig, seed: int) -> None:
        super().__init__()
        self.datasets = datasets
        self.collate_fn = collate_fn
        self.cfg = data
        self.seed = seed

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        batch = self.cfg.batch_size if train else (self.cfg.eval_batch_size or self.cfg.batch_size)
        workers = self.cfg.num_workers
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=EpochSeededSampler(dataset, self.seed, shuffle=train),
            collate_fn=self.collate_fn,
            num_workers=workers,
            persistent_workers=False,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("valid", False) if "valid" in self.datasets else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", False) if "test" in self.datasets else []
