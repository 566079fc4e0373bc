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
