"""Atomic file writes and training states saved without pickle (no Lightning here).

A training state (Lightning's resume checkpoint ``last.ckpt``) is a nested dict of tensors, numbers,
strings and lists: the tensors go into a safetensors file and the rest of the tree into its
metadata as JSON. Writes are atomic (temporary name, fsync, rename), so a crash mid-write leaves
the previous file intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from polyfuse.errors import CheckpointError

_TREE_KEY = "polyfuse_tree"
_FORMAT_KEY = "polyfuse_format"
_FORMAT = "lightning-state-v1"


def _encode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: _encode(v, tensors) for k, v in obj.items()}}
        return {"__items__": [[_encode(k, tensors), _encode(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, tensors) for v in obj]
    if isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            return {"__float__": repr(obj)}
        return obj
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    try:  # numpy scalars and arrays
        import numpy as np

        if isinstance(obj, np.generic):
            return _encode(obj.item(), tensors)
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": _encode(torch.from_numpy(np.ascontiguousarray(obj)), tensors)}
    except ImportError:  # pragma: no cover
        pass
    raise CheckpointError(f"cannot store a {type(obj).__name__} in a checkpoint without pickling it")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__dict__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__dict__"].items()}
    if "__items__" in obj:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["__items__"]}
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__ndarray__" in obj:
        return _decode(obj["__ndarray__"], tensors).numpy()
    raise CheckpointError(f"unexpected node in checkpoint tree: {sorted(obj)}")


def atomic_write_bytes(path: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write to a temporary name in the same folder, then rename over ``path``: readers see the old
    file or the new one, whole, never a part. ``durable`` (the default) also fsyncs the file before
    the rename and the folder after it, so that the new file survives a power cut; without it a crash
    of the machine (not of the process) may leave the old file or an empty one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if durable:
        _fsync_folder(path.parent)


def atomic_link(source: str | Path, path: str | Path) -> bool:
    """Make ``path`` another name (a hard link) of the file ``source``, atomically and durably.

    Linked to a temporary name, renamed over ``path`` (readers see the old file or ``source``'s, whole),
    then the folder is fsynced. The two names share one file: valid as long as ``source`` is only ever
    replaced (written to a new file and renamed over, as ``atomic_write_bytes`` does), never written in
    place. Returns False, leaving ``path`` as it was, where the filesystem has no hard links.
    """
    source, path = Path(source), Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.unlink(missing_ok=True)
        os.link(source, tmp)
    except OSError:  # no hard links here (some network / FUSE / FAT filesystems)
        return False
    os.replace(tmp, path)
    _fsync_folder(path.parent)
    return True


def _fsync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:  # pragma: no cover - platforms without directory fsync
        pass


def save_state(state: dict[str, Any], path: str | Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(state, tensors)
    # safetensors refuses tensors that share memory: copy those
    seen: dict[int, str] = {}
    for key, tensor in list(tensors.items()):
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[key] = tensor.clone()
        seen[ptr] = key
    data = safetensors_save(tensors, metadata={_TREE_KEY: json.dumps(tree), _FORMAT_KEY: _FORMAT})
    atomic_write_bytes(path, data)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        # a safetensors file starts with its header length, whose first byte may be 0x80 or "PK":
        # the pickle/zip signatures are only looked at once the file is known not to be safetensors
        with open(path, "rb") as fh:
            head = fh.read(16)
        if head[:2] == b"\x80\x02" or head[:2] == b"PK" or head[:1] == b"\x80":
            raise CheckpointError(f"{path}: this is a pickle/zip file, which polyfuse never loads (it could run code)") from None
        raise CheckpointError(f"{path}: not a readable polyfuse checkpoint ({exc})") from None
    if meta.get(_FORMAT_KEY) != _FORMAT:
        raise CheckpointError(f"{path}: not a polyfuse training-state checkpoint")
    return _decode(json.loads(meta[_TREE_KEY]), tensors)
