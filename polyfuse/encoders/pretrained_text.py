"""Pretrained BERT-family text encoders through ``transformers`` (all-MiniLM-L6-v2 offline by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polyfuse.errors import ConfigError, MissingPackageError
from polyfuse.encoders.base import Encoder, masked_mean
from polyfuse.registry import ENCODERS
from polyfuse.types import EncoderOutput
from polyfuse.weights import pretrained_text_folder

POOLS = ("mean", "cls")


def load_text_config(folder: Path) -> Any:
    """The model's ``transformers`` config, read from a local folder (cheap: no weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingPackageError(f"text model in {folder} could not be read by transformers: {exc}") from None


def load_text_model(folder: Path, config: Any) -> nn.Module:
    """``AutoModel`` from a local folder, never touching the network; the unused pooler is dropped."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    if not any(Path(folder).glob("*.safetensors")):
        raise ConfigError(
            f"model: {folder} has no .safetensors weights; polyfuse does not load pickled weights "
            "(pytorch_model.bin: unpickling can run code). Convert them to safetensors first"
        )
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        # safetensors only: a pickled pytorch_model.bin next to them is never read
        model = AutoModel.from_pretrained(str(folder), config=config, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise MissingPackageError(f"text model in {folder} could not be loaded by transformers: {exc}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if getattr(model, "pooler", None) is not None:  # BERT's [CLS] pooler: unused here, would idle in DDP
        model.pooler = None
    return model


@ENCODERS.register("hf_text", modalities=("text",), pretrained=True)
class HFTextEncoder(Encoder):
    """A pretrained transformer's last hidden states as tokens; pooled by attention-masked mean or [CLS].

    ``model``: ``minilm`` (all-MiniLM-L6-v2 from its package, offline), a local model folder,
    or ``hf:ORG/NAME`` (hub, needs internet once). The text input must use the same tokenizer
    (``tokenizer: minilm`` / the same folder / the same ``hf:`` name). ``dim`` adds a linear
    projection; the builder passes ``model.dim``, so set ``dim: null`` to keep the model's width
    (384 for MiniLM). ``freeze`` fixes every transformer weight (and keeps its dropout off).
    """

    def __init__(
        self,
        model: str = "minilm",
        pool: str = "mean",
        freeze: bool = False,
        dim: int | None = None,
        vocab_size: int | None = None,
        max_length: int | None = None,
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"pool: {pool!r} is not allowed; allowed: {', '.join(POOLS)}")
        self.pool = pool
        self.freeze = freeze
        folder = pretrained_text_folder(model)
        config = load_text_config(folder)
        hidden = int(config.hidden_size)
        model_vocab = getattr(config, "vocab_size", None)
        if vocab_size is not None and model_vocab is not None and vocab_size > model_vocab:
            raise ConfigError(
                f"model: the text input's tokenizer has {vocab_size} ids but {model!r} knows {model_vocab}; "
                f"give the text input the model's own tokenizer (tokenizer: {model})"
            )
        positions = getattr(config, "max_position_embeddings", None)
        if max_length is not None and positions is not None and max_length > positions:
            raise ConfigError(
                f"max_length: {model!r} reads at most {positions} tokens; "
                f"set the text input's max_length <= {positions}"
            )
        self.backbone = load_text_model(folder, config)
        if freeze:
            self.backbone.requires_grad_(False)
        self.proj = nn.Linear(hidden, dim) if dim is not None else nn.Identity()
        self.output_dim = dim if dim is not None else hidden
        self.train(True)

    def train(self, mode: bool = True) -> "HFTextEncoder":
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def forward(self, inputs: dict[str, Tensor]) -> EncoderOutput:
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"]  # [B,L] each
        empty = mask.sum(dim=1) == 0  # [B] missing texts: they attend to position 0 so attention stays finite
        first = torch.arange(mask.shape[1], device=mask.device) == 0  # [L]
        attend = mask.masked_fill(empty[:, None] & first[None, :], 1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attend).last_hidden_state  # [B,L,H]
        tokens = self.proj(hidden)  # [B,L,D]
        real = mask.bool()
        if self.pool == "cls":
            pooled = tokens[:, 0] * (~empty).unsqueeze(-1).to(tokens.dtype)
        else:
            pooled = masked_mean(tokens, real)
        return EncoderOutput(tokens=tokens, pooled=pooled, mask=real)
