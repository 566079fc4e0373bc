"""Initialising from another run (pretrain -> fine-tune) and freezing parts of a model."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch

from polyfuse.errors import CheckpointError


def load_matching_weights(model: torch.nn.Module, source: str | Path, prefixes: Sequence[str] = ()) -> list[str]:
    """Copy every weight of the checkpoint at ``source`` whose name and shape match; returns the names.

    ``source`` is a checkpoint directory (its model.safetensors) or a .safetensors file.
    ``prefixes`` limits the copy to names starting with one of them (e.g. ``encoders.``).
    """
    from polyfuse.checkpoint import read_weights, verify_model_dir

    path = Path(source)
    if path.is_dir():
        verify_model_dir(path)
        path = path / "model.safetensors"
    elif path.suffix != ".safetensors":
        raise CheckpointError(
            f"{source}: init_from takes a polyfuse checkpoint directory or a .safetensors file "
            "(pickle-based .ckpt/.pt/.pth files are never loaded: unpickling can run code)"
        )
    state = read_weights(path)
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


# --------------------------------------------------------------------------- fine-tuning schedules


def block_key(name: str) -> str:
    """The block a parameter belongs to: its name up to the first numeric part (``features.12``),
    or its first part when there is none (``embed``, ``proj``)."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return parts[0]


def _graph_distances(root: torch.Tensor) -> dict[int, int]:
    """id(parameter) -> fewest autograd steps between it and ``root`` (its distance from the output)."""
    distances: dict[int, int] = {}
    frontier = [(root.grad_fn, 0)] if root.grad_fn is not None else []
    seen: set[int] = set()
    while frontier:
        next_frontier = []
        for node, dist in frontier:
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            variable = getattr(node, "variable", None)  # AccumulateGrad: a leaf parameter
            if variable is not None:
                distances.setdefault(id(variable), dist)
            next_frontier += [(child, dist + 1) for child, _ in node.next_functions]
        frontier = next_frontier
    return distances


def _probe_order(encoder: torch.nn.Module, inputs: Mapping[str, torch.Tensor], blocks: list[str], names: list[str]) -> list[str]:
    """``blocks`` from the input side to the output side, by how far their parameters are from ``pooled``
    in the autograd graph of one forward pass (eval mode: BatchNorm statistics are not touched)."""
    modes = {m: m.training for m in encoder.modules()}
    encoder.eval()
    try:
        with torch.enable_grad():
            out = encoder(dict(inputs))
            distances = _graph_distances(out.pooled.float().sum())
    finally:
        for module, mode in modes.items():
            module.training = mode
    params = dict(encoder.named_parameters())
    unreached = max(distances.values(), default=0) + 1  # parameters pooled does not use sit at the bottom
    block_distance: dict[str, int] = {}
    for n in names:
        d = distances.get(id(params[n]), unreached)
        key = block_key(n)
        block_distance[key] = min(block_distance.get(key, d), d)
    return sorted(blocks, key=lambda b: (-block_distance[b], blocks.index(b)))


def encoder_depths(
    model: torch.nn.Module, inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None
) -> dict[str, tuple[int, int]]:
    """``encoders.<input>.<param>`` -> (block index, blocks in that encoder); index 0 = nearest the input.

    With ``inputs`` (one batch), blocks are ordered by their distance from the encoder's pooled
    output in the autograd graph of a forward pass, which follows the data flow whatever the
    order the modules were registered in. Without, registration order is used.
    """
    encoders = getattr(model, "encoders", None)
    out: dict[str, tuple[int, int]] = {}
    if encoders is None:
        return out
    for input_name, encoder in encoders.items():
        names = [n for n, _ in encoder.named_parameters()]
        blocks = list(dict.fromkeys(block_key(n) for n in names))
        if inputs is not None and input_name in inputs:
            blocks = _probe_order(encoder, inputs[input_name], blocks, names)
        order = {b: i for i, b in enumerate(blocks)}
        for n in names:
            out[f"encoders.{input_name}.{n}"] = (order[block_key(n)], len(order))
    return out


def lr_scales(
    model: torch.nn.Module, layerwise_decay: float | None, inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None
) -> dict[str, float]:
    """Learning-rate multiplier per parameter name: ``decay ** (blocks above it)`` inside each encoder,
    1.0 for everything else (fusion, heads, objectives) and for all when ``layerwise_decay`` is None.
    ``inputs``: one batch's inputs, to order each encoder's blocks by the data flow (see ``encoder_depths``)."""
    scales = {name: 1.0 for name, _ in model.named_parameters()}
    if layerwise_decay is None or layerwise_decay == 1.0:
        return scales
    for name, (depth, total) in encoder_depths(model, inputs).items():
        scales[name] = float(layerwise_decay) ** (total - 1 - depth)
    return scales


def no_weight_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Biases, norms, embeddings and learned tokens get no weight decay."""
    lowered = name.lower()
    return param.dim() < 2 or "norm" in lowered or "embed" in lowered or "token" in lowered


def parameter_groups(
    model: torch.nn.Module,
    weight_decay: float,
    lr: float,
    layerwise_decay: float | None = None,
    inputs: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> list[dict]:
    """Optimizer groups of the trainable parameters: (weight decay or not) x learning-rate scale."""
    scales = lr_scales(model, layerwise_decay, inputs)
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        skip = no_weight_decay(name, param)
        key = (skip, scales[name])
        if key not in groups:
            groups[key] = {"params": [], "weight_decay": 0.0 if skip else weight_decay, "lr": lr * scales[name],
                           "lr_scale": scales[name]}
        groups[key]["params"].append(param)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], -k[1]))]


class FreezeSchedule:
    """Encoders frozen for the first ``epochs`` epochs, then trained (gradual fine-tuning).

    The parameters it governs are the encoders' trainable ones when it is made (weights frozen
    for good, e.g. by ``freeze:`` or an encoder's own ``freeze``, stay frozen). While frozen,
    their ``requires_grad`` is off (no backward through them) and their modules are in eval mode
    (BatchNorm statistics and dropout fixed), so they do not change at all. ``drop_grads`` also
    clears any gradient they got, for strategies (DDP) whose gradient hooks need requires_grad on.
    """

    def __init__(self, model: torch.nn.Module, epochs: int, prefixes: Sequence[str] = ("encoders.",)) -> None:
        self.epochs = int(epochs)
        self.prefixes = tuple(prefixes)
        self.params = [
            p for n, p in model.named_parameters() if p.requires_grad and any(n.startswith(x) for x in self.prefixes)
        ]
        encoders = getattr(model, "encoders", None)
        self.modules = [encoders] if encoders is not None and "encoders." in self.prefixes else []

    def frozen(self, epoch: int) -> bool:
        return epoch < self.epochs

    def apply(self, epoch: int, toggle_grad: bool = True) -> bool:
        """Set the state for ``epoch`` (call at each training epoch's start); returns whether frozen."""
        frozen = self.frozen(epoch)
        if toggle_grad:
            for p in self.params:
                p.requires_grad_(not frozen)
        for module in self.modules:
            module.train(not frozen)
        return frozen

    def drop_grads(self) -> None:
        for p in self.params:
            p.grad = None
