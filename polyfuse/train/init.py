"""Initialising from another run (pretrain -> fine-tune) and freezing parts of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file

from polyfuse.errors import CheckpointError


def load_matching_weights(model: torch.nn.Module, source: str | Path, prefixes: Sequence[str] = ()) -> list[str]:
    """Copy every weight of the checkpoint at ``source`` whose name and shape match; returns the names.

    ``source`` is a checkpoint directory (its model.safetensors) or a .safetensors file.
    ``prefixes`` limits the copy to names starting with one of them (e.g. ``encoders.``).
    """
    from polyfuse.checkpoint import verify_model_dir

    path = Path(source)
    if path.is_dir():
        verify_model_dir(path)
        path = path / "model.safetensors"
    elif path.suffix != ".safetensors":
        raise CheckpointError(f"{source}: init_from takes a polyfuse checkpoint directory or a .safetensors file")
    state = load_file(str(path))
    own = model.state_dict()
    loaded = []
    for name, tensor in state.items():
        if prefixes and not any(name.startswith(p) for p in prefixes):
            continue
        if name in own and own[name].shape == tensor.shape:
            own[name] = tensor
            loaded.append(name)
    if not loaded:
        raise CheckpointError(f"{source}: no weight matches this model by name and shape")
    model.load_state_dict(own)
    return loaded


def freeze(model: torch.nn.Module, prefixes: Sequence[str]) -> int:
    """Set requires_grad=False on parameters whose name starts with a prefix; returns how many."""
    count = 0
    for name, param in model.named_parameters():
        if any(name.startswith(p) for p in prefixes):
            param.requires_grad_(False)
            count += 1
    if prefixes and count == 0:
        from polyfuse.config import ConfigError

        names = sorted({n.split(".")[0] + "." + n.split(".")[1] for n, _ in model.named_parameters() if "." in n})
        raise ConfigError(f"freeze: no parameter starts with {list(prefixes)}; modules: {', '.join(names)}")
    return count
