"""Masked language modelling over a fused single-stream model: predict masked text tokens from the fused tokens.

A fraction ``mask_prob`` of the real, non-special text tokens of each batch is chosen; BERT's
80/10/10 rule replaces 80% of them by the mask token, 10% by a random token and leaves 10%
as they are. The text is encoded again with these ids and fused with the other inputs by
the model's own fusion, which must return tokens and their per-input spans
(``FusionOutput.extras["token_spans"]``: ``fit``, ``cross_attention``). An LM head over the
text positions of the fused tokens predicts the original ids; loss = cross-entropy on the
chosen positions only. The masked text therefore attends to the other modalities: a masked
colour word of a caption can only be recovered from the image.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.objectives.contrastive import _config_error
from polyfuse.registry import OBJECTIVES
from polyfuse.types import InputSpec


def mask_tokens(
    ids: Tensor,
    candidates: Tensor,
    mask_prob: float,
    mask_id: int,
    vocab_size: int,
    special_ids: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masking of ``ids`` [B, L] at ``candidates`` [B, L] bool -> (corrupted ids, labels with -100 elsewhere).

    At least one candidate is chosen when there is any, so a batch always has a target.
    Random replacements are never special tokens.
    """
    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=ids.device) if generator is not None else torch.rand(*shape, device=ids.device)

    chosen = (rand(*ids.shape) < mask_prob) & candidates
    if not bool(chosen.any()) and bool(candidates.any()):
        flat = candidates.flatten().nonzero().squeeze(1)
        pick = flat[int(rand(1).item() * flat.numel()) % flat.numel()]
        chosen = chosen.flatten().clone()
        chosen[pick] = True
        chosen = chosen.view_as(ids)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = rand(*ids.shape)
    corrupted = torch.where(chosen & (roll < 0.8), torch.full_like(ids, mask_id), ids)
    if generator is not None:
        random_ids = torch.randint(0, vocab_size, ids.shape, generator=generator, device=ids.device)
    else:
        random_ids = torch.randint(0, vocab_size, ids.shape, device=ids.device)
    random_ok = ~torch.isin(random_ids, special_ids)  # a special id drawn: keep the original
    replace = chosen & (roll >= 0.8) & (roll < 0.9) & random_ok
    corrupted = torch.where(replace, random_ids, corrupted)
    return corrupted, labels


@OBJECTIVES.register("mlm", crossmodal=True)
class MaskedLMObjective(nn.Module):
    """Masked LM on the text input ``text`` (default: the first text input) through the model's fusion.

    ``mask_prob``: fraction of tokens chosen (BERT 80/10/10). ``mask_id``: the mask token id
    (default: the tokenizer's [MASK] / <mask>). ``hidden``: LM head transform width (default:
    the fusion width). Logs ``loss`` and ``acc`` (masked tokens predicted exactly).
    """

    def __init__(
        self,
        specs: dict[str, InputSpec],
        fusion_dim: int | None,
        text: str | None = None,
        mask_prob: float = 0.15,
        mask_id: int | None = None,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        texts = [n for n, s in specs.items() if s.kind == "text"]
        if not texts:
            raise _config_error("text: mlm needs a text input; inputs: " + ", ".join(f"{n} ({s.kind})" for n, s in specs.items()))
        text = text or texts[0]
        if text not in texts:
            raise _config_error(f"text: {text!r} is not a text input; allowed: {', '.join(texts)}")
        if fusion_dim is None:
            raise _config_error("fusion: mlm needs a token-level fusion with an output width (fit, cross_attention)")
        if not 0.0 < float(mask_prob) < 1.0:
            raise _config_error(f"mask_prob: must be in (0, 1), got {mask_prob}")
        spec = specs[text]
        assert spec.vocab_size is not None
        mask_id = mask_id if mask_id is not None else spec.extra.get("mask_id")
        if mask_id is None:
            raise _config_error(f"mask_id: the tokenizer of input {text!r} has no [MASK] / <mask> token; set mask_id")
        if not 0 <= int(mask_id) < spec.vocab_size:
            raise _config_error(f"mask_id: {mask_id} is outside the vocabulary (size {spec.vocab_size})")
        self.text = text
        self.mask_prob = float(mask_prob)
        self.mask_id = int(mask_id)
        self.vocab_size = int(spec.vocab_size)
        specials = sorted({int(spec.pad_id), self.mask_id, *[int(i) for i in spec.extra.get("special_ids", [])]})
        self.register_buffer("special_ids", torch.tensor(specials, dtype=torch.long), persistent=False)
        width = int(fusion_dim)
        hidden = int(hidden or width)
        # BERT's LM head: transform (dense, GELU, LayerNorm), then a decoder over the vocabulary
        self.transform = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.LayerNorm(hidden))
        self.decoder = nn.Linear(hidden, self.vocab_size)

    def text_tokens(self, fused: Any, length: int) -> Tensor:
        """The fused tokens at the text input's positions: [B, L, D]."""
        spans = fused.extras.get("token_spans") if fused.extras else None
        if fused.tokens is None or spans is None or self.text not in fused.modalities:
            raise _config_error(
                "fusion: mlm needs a fusion that returns tokens with their per-input spans "
                "(model.fusion: fit or cross_attention)"
            )
        start, end = (int(v) for v in spans[fused.modalities.index(self.text)].tolist())
        if end - start != length:
            raise _config_error(
                f"text: the fused sequence holds {end - start} tokens of input {self.text!r} for {length} ids; "
                "mlm needs a text encoder whose tokens align with the ids"
            )
        return fused.tokens[:, start:end]

    def forward(self, model: nn.Module, batch: Mapping[str, Any], out: Any) -> dict[str, Tensor]:
        inputs = batch["inputs"][self.text]
        ids, attention = inputs["input_ids"].long(), inputs["attention_mask"].bool()  # [B, L]
        present = {k: v.bool() for k, v in batch["present"].items()}
        specials = self.special_ids.to(ids.device)
        candidates = attention & present[self.text][:, None] & ~torch.isin(ids, specials)
        generator = None
        if not self.training:  # the same masks at every evaluation
            generator = torch.Generator(device=ids.device).manual_seed(int(batch["row"].sum()))
        corrupted, labels = mask_tokens(
            ids, candidates, self.mask_prob, self.mask_id, self.vocab_size, specials, generator
        )
        features = dict(out.features)
        features[self.text] = model.encoders[self.text]({**inputs, "input_ids": corrupted})
        fused = model.fusion(features, present)
        tokens = self.text_tokens(fused, ids.shape[1])  # [B, L, D]
        chosen = labels != -100
        if not bool(chosen.any()):  # no text in this batch
            zero = tokens.sum() * 0.0 + sum(p.sum() for p in self.parameters()) * 0.0
            return {"loss": zero, "acc": zero.detach()}
        logits = self.decoder(self.transform(tokens[chosen].float()))  # [n, V]
        target = labels[chosen]
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=-1) == target).float().mean().detach()
        return {"loss": loss, "acc": acc}
