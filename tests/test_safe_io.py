"""Training-state checkpoints: no pickle either way, atomic writes, clear refusals."""

import math
import os
import pickle

import pytest
import torch

from polyfuse.errors import CheckpointError
from polyfuse.safe_state import load_state, save_state


def test_roundtrip_keeps_types(tmp_path):
    state = {
        "w": torch.randn(3, 2),
        "opt": {"state": {0: {"exp_avg": torch.ones(2), "step": torch.tensor(5.0)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
        "tuple": (1, 2.5, "s", None, True),
        "inf": math.inf,
        "nested": [torch.zeros(1), {"k": -math.inf}],
    }
    path = tmp_path / "last.ckpt"
    save_state(state, path)
    back = load_state(path)
    assert torch.equal(back["w"], state["w"])
    assert list(back["opt"]["state"]) == [0]  # int keys survive
    assert back["tuple"] == (1, 2.5, "s", None, True)
    assert back["inf"] == math.inf and back["nested"][1]["k"] == -math.inf
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temporary file left behind"


def test_refuses_objects_that_need_pickle(tmp_path):
    with pytest.raises(CheckpointError, match="without pickling"):
        save_state({"x": object()}, tmp_path / "a.ckpt")


def test_planted_pickle_is_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "last.ckpt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_state(path)
    torch.save({"a": 1}, tmp_path / "zip.ckpt")
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "zip.ckpt")
    assert not marker.exists()


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    save_state({"w": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_state(path)


def test_atomic_link_and_non_durable_writes(tmp_path):
    from polyfuse.safe_state import atomic_link, atomic_write_bytes

    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    atomic_write_bytes(best, b"epoch 1")
    atomic_write_bytes(last, b"epoch 0", durable=False)
    assert last.read_bytes() == b"epoch 0"
    assert atomic_link(best, last)
    assert last.read_bytes() == b"epoch 1" and os.path.samefile(best, last)
    atomic_write_bytes(last, b"epoch 2")  # replacing one name leaves the other's content
    assert best.read_bytes() == b"epoch 1" and last.read_bytes() == b"epoch 2"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "temporary file left behind"


def test_an_improving_epoch_writes_the_training_state_once(tmp_path, monkeypatch):
    """best.ckpt is written when the monitor improves and last.ckpt linked to it; otherwise last.ckpt alone."""
    import lightning as L

    import polyfuse.safe_state as safe_state
    from polyfuse.train.callbacks import checkpoint_callbacks
    from polyfuse.train.safe_io import SafeCheckpointIO

    scores = [0.5, 0.7, 0.6, 0.8]  # valid/acc per epoch (mode max): improves in epochs 0, 1 and 3

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("valid/acc", scores[self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    writes = []
    save = safe_state.save_state
    monkeypatch.setattr("polyfuse.train.safe_io.save_state", lambda state, path: (writes.append(os.path.basename(path)), save(state, path)))
    data = torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=4)
    best, callbacks = checkpoint_callbacks(tmp_path, "valid/acc", "max")
    snapshots = []

    class Snapshot(L.Callback):  # after each epoch's checkpoints: (epoch in best.ckpt, epoch in last.ckpt, same file)
        def on_train_epoch_start(self, trainer, pl_module):
            if (tmp_path / "last.ckpt").exists():
                b, la = load_state(tmp_path / "best.ckpt"), load_state(tmp_path / "last.ckpt")
                snapshots.append((b["epoch"], la["epoch"], os.path.samefile(tmp_path / "best.ckpt", tmp_path / "last.ckpt")))

    trainer = L.Trainer(
        max_epochs=4, callbacks=[*callbacks, Snapshot()], plugins=[SafeCheckpointIO()], logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
    )
    trainer.fit(Module(), train_dataloaders=data, val_dataloaders=data)
    assert writes == ["best.ckpt", "best.ckpt", "last.ckpt", "best.ckpt"]  # one write per epoch
    assert snapshots == [(0, 0, True), (1, 1, True), (1, 2, False)]
    assert load_state(tmp_path / "best.ckpt")["epoch"] == load_state(tmp_path / "last.ckpt")["epoch"] == 3
    assert float(best.best_model_score) == pytest.approx(0.8)
    state = load_state(tmp_path / "last.ckpt")  # the linked state holds best's decision of that epoch
    assert state["callbacks"][best.state_key]["best_model_score"] == pytest.approx(0.8)
