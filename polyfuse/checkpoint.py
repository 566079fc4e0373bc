"""Model checkpoints as directories: safetensors weights + YAML/JSON, never pickle.

Layout of a saved model directory::

    config.yaml        complete config (enough to rebuild)
    model.json         input specs, task output widths, polyfuse version
    model.safetensors  weights
    pipeline/          fitted preprocessing (JSON, tokenizer JSON)
    metrics.json       evaluation metrics (when known)
    COMPLETE           written last: SHA-256 of the files above; its absence or a mismatch
                       means the directory is half written and it is refused
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from polyfuse._version import __version__
from polyfuse.config import Config
from polyfuse.errors import CheckpointError
from polyfuse.safe_state import atomic_write_bytes
from polyfuse.types import InputSpec

MARKER = "COMPLETE"
HASHED_FILES = ("config.yaml", "model.json", "model.safetensors")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
#: safetensors metadata key: JSON {key: key it is stored under} for tensors stored once (see ``save_weights``)
ALIASES_KEY = "polyfuse_aliases"


def hashed_files(directory: Path) -> list[str]:
    """Files the COMPLETE marker records: the model files and every file of the saved pipeline."""
    pipeline = directory / "pipeline"
    if not pipeline.is_dir():
        return list(HASHED_FILES)
    return [*HASHED_FILES, *sorted(p.relative_to(directory).as_posix() for p in pipeline.rglob("*") if p.is_file())]


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, identical tensors stored once given back under each of their keys
    (sharing memory); CheckpointError (never an unpickling attempt) for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as fh:  # one open: the metadata and the tensors
            metadata = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as exc:  # safetensors raises several types for damaged or foreign files
        # a safetensors file starts with its header length, whose first byte may be 0x80 or "PK":
        # the pickle/zip signatures are only looked at once the file is known not to be safetensors
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:1] == b"\x80" or head == b"PK":
            raise CheckpointError(
                f"{path}: this is a pickle/zip (torch.save) file, not safetensors; polyfuse never unpickles weights "
                "(a pickle can run code)"
            ) from None
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
    try:
        aliases = json.loads(metadata.get(ALIASES_KEY, "{}"))
    except ValueError:
        raise CheckpointError(f"{path}: its {ALIASES_KEY} metadata is not JSON") from None
    for alias, canonical in aliases.items():
        if canonical not in state:
            raise CheckpointError(f"{path}: {alias} is stored as {canonical}, which the file does not hold")
        state[alias] = state[canonical]
    return state


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LoadedCheckpoint:
    path: Path
    config: Config
    model: torch.nn.Module
    specs: dict[str, InputSpec]
    task_dims: dict[str, int]
    pipeline: Any
    metrics: dict[str, Any]


def _identical_groups(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{alias: canonical} for tensors whose dtype, shape and bytes equal an earlier key's (its first key).

    An ensemble's members that carry the same frozen backbone hold one copy each; so do the copies of
    a pretrained encoder used for two inputs. Only tensors of one dtype and shape are compared: first
    by a digest of their bytes, then exactly.
    """
    by_layout: dict[tuple[Any, ...], list[str]] = {}
    for key, tensor in state.items():
        if tensor.numel() >= 2 and tensor.layout == torch.strided and not tensor.is_quantized:  # one number: no alias
            by_layout.setdefault((tensor.dtype, tuple(tensor.shape)), []).append(key)
    aliases: dict[str, str] = {}
    for keys in by_layout.values():
        if len(keys) < 2:
            continue
        first_of: dict[str, str] = {}  # digest -> first key with it
        for key in keys:
            raw = state[key].reshape(-1).view(torch.uint8).numpy()
            digest = hashlib.blake2b(memoryview(raw), digest_size=16).hexdigest()
            canonical = first_of.setdefault(digest, key)
            if canonical != key and torch.equal(state[canonical], state[key]):
                aliases[key] = canonical
    return aliases


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """State dict to safetensors, atomically; identical tensors (same dtype, shape and values) are
    stored once, the other keys listed in the ``polyfuse_aliases`` metadata (``read_weights`` gives
    every key back). Tensors that share memory but differ in view are copied."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    aliases = _identical_groups(state)
    state = {k: v for k, v in state.items() if k not in aliases}
    seen: set[int] = set()
    for key, tensor in state.items():
        ptr = tensor.untyped_storage().data_ptr()
        if tensor.numel() and ptr in seen:
            state[key] = tensor.clone()
        seen.add(ptr)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    metadata = {"format": "pt", "polyfuse": __version__}
    if aliases:
        metadata[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    save_file(state, str(tmp), metadata=metadata)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_model_dir(
    directory: str | Path,
    model: torch.nn.Module,
    config: Config,
    specs: dict[str, InputSpec],
    task_dims: dict[str, int],
    pipeline: Any,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a complete model directory; COMPLETE is written last."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / MARKER
    if marker.exists():
        marker.unlink()
    atomic_write_bytes(directory / "config.yaml", config.to_yaml().encode("utf-8"))
    meta = {
        "polyfuse_version": __version__,
        "specs": {name: spec.to_dict() for name, spec in specs.items()},
        "task_dims": dict(task_dims),
    }
    atomic_write_bytes(directory / "model.json", json.dumps(meta, indent=2).encode("utf-8"))
    save_weights(model, directory / "model.safetensors")
    if pipeline is not None:
        pipeline.save(directory / "pipeline")
    if metrics is not None:
        write_metrics(directory, metrics)
    hashes = {name: _sha256(directory / name) for name in hashed_files(directory)}
    atomic_write_bytes(marker, json.dumps({"sha256": hashes}, indent=2).encode("utf-8"))
    return directory


def write_metrics(directory: str | Path, metrics: dict[str, Any]) -> None:
    atomic_write_bytes(Path(directory) / "metrics.json", json.dumps(metrics, indent=2, default=float).encode("utf-8"))


def verify_model_dir(directory: str | Path) -> Path:
    """Raise CheckpointError unless ``directory`` is a complete, untampered model directory."""
    directory = Path(directory)
    if directory.is_file():
        if directory.suffix.lower() in PICKLE_SUFFIXES or directory.name.endswith(".tar"):
            raise CheckpointError(
                f"{directory}: a pickle-style file; polyfuse loads only checkpoint directories "
                "(safetensors + YAML/JSON) and never unpickles, since a pickle can run code"
            )
        raise CheckpointError(f"{directory}: expected a checkpoint directory, got a file")
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    stray = [p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES and p.is_file()]
    marker = directory / MARKER
    if not marker.is_file():
        hint = f" (it holds {', '.join(stray)}, which polyfuse never unpickles)" if stray else ""
        raise CheckpointError(
            f"{directory}: not a complete polyfuse checkpoint: {MARKER} is missing, so it may be half written{hint}"
        )
    try:
        expected = json.loads(marker.read_text())["sha256"]
    except (ValueError, KeyError):
        raise CheckpointError(f"{directory}/{MARKER}: unreadable") from None
    recorded = [*HASHED_FILES, *(n for n in expected if n not in HASHED_FILES)]
    for name in recorded:
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if _sha256(path) != expected.get(name):
            raise CheckpointError(f"{directory}: {name} does not match its recorded checksum (changed or half written)")
    if any(n.startswith("pipeline/") for n in expected):  # markers that record the pipeline: nothing may be added
        added = [n for n in hashed_files(directory) if n not in expected]
        if added:
            raise CheckpointError(f"{directory}: {added[0]} was added after the checkpoint was completed")
    return directory


def load_model_dir(directory: str | Path, *, with_pipeline: bool = True) -> LoadedCheckpoint:
    """Rebuild the model from a checkpoint directory alone. Never unpickles."""
    from polyfuse.build import build_model

    directory = verify_model_dir(directory)
    config = Config.from_yaml(directory / "config.yaml")
    meta = json.loads((directory / "model.json").read_text())
    specs = {name: InputSpec.from_dict(d) for name, d in meta["specs"].items()}
    task_dims = {k: int(v) for k, v in meta["task_dims"].items()}
    model = build_model(config, specs, task_dims)
    state = read_weights(directory / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: weights do not fit the model built from config.yaml "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.eval()
    pipeline = None
    if with_pipeline and (directory / "pipeline").exists():
        from polyfuse.data.pipeline import DataPipeline

        pipeline = DataPipeline.load(directory / "pipeline")
    metrics_path = directory / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    return LoadedCheckpoint(directory, config, model, specs, task_dims, pipeline, metrics)
