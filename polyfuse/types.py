"""Data types shared by every part of polyfuse: what flows between data, encoders, fusion and heads.

Batch layout (produced by ``polyfuse.data.collate``, consumed by ``MultimodalModel``)::

    batch = {
        "inputs":  {input_name: {key: Tensor}},   # keys per kind: see INPUT_KEYS
        "present": {input_name: BoolTensor[B]},   # False = the modality is missing for that row
        "labels":  {task_name: Tensor[B] or [B, K]},  # classification: long ids, -100 = no label
        "row":     LongTensor[B],                  # row index in the source table
    }

A missing modality still has a tensor of the right shape (zeros) so that every
batch has the same structure; ``present`` says which rows are real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch stays out of imports of this module (numpy-only inference reuses InputSpec)
    from torch import Tensor

#: Input kinds and the tensors each one carries in a batch (shapes per row batch of B).
INPUT_KEYS: dict[str, dict[str, str]] = {
    # pixels: float [B, C, H, W], normalized
    "image": {"pixels": "float [B,C,H,W]"},
    # token ids and attention mask (1 = real token), padded to the batch's longest row
    "text": {"input_ids": "long [B,L]", "attention_mask": "long [B,L]"},
    # mono waveform at the processor's sample rate, zero padded; lengths in samples
    "audio": {"waveform": "float [B,S]", "lengths": "long [B]"},
    # precomputed feature frames (MFCC, sensor channels, ...), mask True = real frame
    "sequence": {"values": "float [B,T,F]", "mask": "bool [B,T]"},
    # normalized numbers (imputed, with missing-indicator columns) and category ids (0 = unknown)
    "tabular": {"numeric": "float [B,N]", "categorical": "long [B,K]"},
    # frames as images; frame_mask True = real frame
    "video": {"frames": "float [B,F,C,H,W]", "frame_mask": "bool [B,F]"},
}

INPUT_KINDS: tuple[str, ...] = tuple(INPUT_KEYS)


@dataclass
class InputSpec:
    """What the data pipeline tells the model builder about one input, after fitting on train.

    Encoders receive the fields they name in their constructor (see ``encoder_kwargs``).
    """

    name: str
    kind: str
    # image / video
    channels: int | None = None
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    # text
    vocab_size: int | None = None
    pad_id: int = 0
    max_length: int | None = None
    # audio
    sample_rate: int | None = None
    num_samples: int | None = None
    # sequence
    feature_dim: int | None = None
    # tabular
    num_numeric: int = 0
    cat_cardinalities: list[int] = field(default_factory=list)
    # free-form extras (e.g. the pretrained tokenizer folder)
    extra: dict[str, Any] = field(default_factory=dict)

    def encoder_kwargs(self) -> dict[str, Any]:
        """Canonical constructor arguments an encoder may ask for by name."""
        out: dict[str, Any] = {
            "in_channels": self.channels,
            "image_size": (self.height, self.width) if self.height and self.width else None,
            "num_frames": self.num_frames,
            "vocab_size": self.vocab_size,
            "pad_id": self.pad_id,
            "max_length": self.max_length,
            "sample_rate": self.sample_rate,
            "num_samples": self.num_samples,
            "feature_dim": self.feature_dim,
            "num_numeric": self.num_numeric,
            "cat_cardinalities": list(self.cat_cardinalities),
        }
        return {k: v for k, v in out.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(**d)


@dataclass
class EncoderOutput:
    """What every encoder returns."""

    tokens: Tensor  # [B, T, D]
    pooled: Tensor  # [B, D]
    mask: Tensor  # [B, T] bool, True = real token

    def __post_init__(self) -> None:
        if str(self.mask.dtype) != "torch.bool":
            self.mask = self.mask.bool()


@dataclass
class FusionOutput:
    """What every fusion returns.

    ``pooled`` is the fused representation [B, D] the heads read. Decision-level fusions
    (late, hybrid) also return ``branches``: features that each go through every head
    separately, and ``branch_weights`` [B, n_branches] (rows sum to 1 over usable branches)
    with which the model averages the heads' outputs.
    ``modality_weights`` [B, M] (order = ``modalities``) is set by fusions that weigh
    modalities (gates, attention, late weights) and feeds the modality-contribution report.
    """

    pooled: Tensor  # [B, D]
    tokens: Tensor | None = None  # [B, T, D]
    mask: Tensor | None = None  # [B, T] bool
    branches: dict[str, Tensor] | None = None  # name -> [B, D]
    branch_weights: Tensor | None = None  # [B, n_branches], order of ``branches``
    modality_weights: Tensor | None = None  # [B, M]
    modalities: tuple[str, ...] = ()
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ModelOutput:
    """What ``MultimodalModel.forward`` returns."""

    outputs: dict[str, Tensor]  # task -> logits [B, C] or predictions [B, K]
    fused: FusionOutput
    features: dict[str, EncoderOutput]
