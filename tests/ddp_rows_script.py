"""Run by tests/test_shards.py: two DDP CPU processes over shards through polyfuse's data module;
each rank writes the rows it trained on, per epoch, to OUT/rank<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch

from polyfuse.config import DataConfig
from polyfuse.data.collate import Collator
from polyfuse.data.pipeline import DataPipeline
from polyfuse.data.stream import ShardStream
from polyfuse.train.datamodule import MultimodalDataModule


class RowRecorder(L.LightningModule):
    """A one-parameter model that records ``batch["row"]`` (gradients flow, so DDP syncs)."""

    def __init__(self, out: Path) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.out = out
        self.rows: dict[int, list[int]] = {}

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.rows.setdefault(self.current_epoch, []).extend(int(r) for r in batch["row"])
        return (self.weight * 0.0 + self.weight ** 2).sum()

    def on_train_end(self) -> None:
        (self.out / f"rank{self.global_rank}.json").write_text(json.dumps(self.rows))

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


def main() -> None:
    shards, out = Path(sys.argv[1]), Path(sys.argv[2])
    pipeline = DataPipeline.load(shards / "pipeline")
    train = ShardStream(shards, pipeline, split="train", shuffle=True, batch_size=4, seed=1, buffer=8)
    data = DataConfig(batch_size=4, num_workers=2)
    module = MultimodalDataModule({"train": train}, Collator(pipeline), data, seed=1)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(RowRecorder(out), datamodule=module)


if __name__ == "__main__":
    main()
