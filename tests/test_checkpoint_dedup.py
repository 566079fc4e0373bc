"""model.safetensors stores identical tensors once (an ensemble's copies of one frozen backbone) and gives every key back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from polyfuse.checkpoint import ALIASES_KEY, read_weights, save_weights
from polyfuse.errors import CheckpointError


class Members(nn.Module):
    """Two 'members' holding equal copies of one 'backbone', plus weights of their own."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8))
        self.b = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 8))
        self.b[0].load_state_dict(self.a[0].state_dict())  # the shared backbone: equal values, separate tensors
        self.low = nn.Parameter(torch.randn(32, 32).to(torch.bfloat16))
        self.low_copy = nn.Parameter(self.low.detach().clone())
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("mask_copy", torch.tensor([True, False, True]))
        self.tied = self.a[1].weight  # the same Parameter under a second name


def test_identical_tensors_are_stored_once_and_read_back_under_every_key(tmp_path: Path) -> None:
    model = Members()
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    with safe_open(str(path), framework="pt") as fh:
        stored = set(fh.keys())
        aliases = json.loads(fh.metadata()[ALIASES_KEY])
    assert aliases == {
        "b.0.weight": "a.0.weight", "b.0.bias": "a.0.bias", "low_copy": "low", "mask_copy": "mask",
        "a.1.weight": "tied",  # state_dict lists a module's own tensors before its children's
    }
    assert stored == set(model.state_dict()) - set(aliases)
    state = read_weights(path)
    assert set(state) == set(model.state_dict())
    for key, tensor in model.state_dict().items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key
    fresh = Members()
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(state)
    x = torch.randn(5, 64)
    assert torch.equal(fresh.a(x), model.a(x)) and torch.equal(fresh.b(x), model.b(x))
    # the backbone's copy takes no space: the file is about the size of the distinct tensors
    distinct = sum(t.numel() * t.element_size() for k, t in model.state_dict().items() if k not in aliases)
    assert path.stat().st_size < distinct + 8192


def test_unequal_tensors_of_one_shape_are_all_stored(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 16))
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    with safe_open(str(path), framework="pt") as fh:
        assert set(fh.keys()) == set(model.state_dict()) and ALIASES_KEY not in (fh.metadata() or {})


def test_an_alias_to_a_missing_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(3)}, str(path), metadata={ALIASES_KEY: json.dumps({"v": "nope"})})
    with pytest.raises(CheckpointError, match="v is stored as nope, which the file does not hold"):
        read_weights(path)
