"""Caption decoder: a Transformer decoder that writes text conditioned on the fused features.

It reads the whole FusionOutput (``needs_fused = True``; see ``MultimodalModel.apply_head``):
with ``targets`` ([B, L] ids, BOS first) it returns teacher-forced next-token logits
[B, L-1, V]; without, it generates ([B, max_length-1] ids: words, EOS, then PAD) by greedy
or beam search. Token ids follow ``polyfuse.data.targets`` (PAD 0, UNK 1, BOS 2, EOS 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polyfuse.errors import ConfigError
from polyfuse.data.targets import BOS_ID, DEFAULT_MAX_LENGTH, EOS_ID, PAD_ID, SPECIALS, UNK_ID
from polyfuse.generation.search import SearchResult, search
from polyfuse.layers.attention import safe_key_mask
from polyfuse.layers.positional import LearnedPositionalEmbedding
from polyfuse.registry import HEADS
from polyfuse.types import FusionOutput

MEMORY_MODES = ("auto", "tokens", "pooled", "both")
#: ids the search never produces (EOS ends a text; PAD only follows it)
_NEVER_GENERATED = (PAD_ID, UNK_ID, BOS_ID)


def _int_at_least(name: str, value: object, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{name}: expected an integer >= {least}, got {value!r}")
    return value


@HEADS.register("caption_decoder", task="generation")
class CaptionDecoder(nn.Module):
    """Pre-norm Transformer decoder: causal self-attention, cross-attention over the fused memory, FFN.

    ``memory``: ``tokens`` (the fusion's ``tokens``/``mask``), ``pooled`` (``pooled`` as one
    memory token), ``both`` (pooled first, then the tokens) or ``auto`` (tokens when the fusion
    gives them, else pooled). A learned "null" memory token is always prepended: attention may
    rest on it, so a head can take the image in at one position and leave it out at another
    (with one memory token every head must attend to it everywhere, and the decoder learns
    the first word the image tells, e.g. the colour, and then stalls on the next, the shape).
    ``dim`` is the decoder width (default ``in_dim``); positions are
    learned up to ``max_length`` (the target encoder's, BOS/EOS included). ``tie_embeddings``
    shares the token embedding with the output projection. ``beam_size`` (1 = greedy),
    ``length_penalty`` and ``max_new_tokens`` (default ``max_length - 1``) set how it generates.
    """

    needs_fused = True

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        max_length: int = DEFAULT_MAX_LENGTH,
        dim: int | None = None,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        memory: str = "auto",
        tie_embeddings: bool = True,
        beam_size: int = 1,
        length_penalty: float = 1.0,
        max_new_tokens: int | None = None,
    ) -> None:
        super().__init__()
        dim = in_dim if dim is None else dim
        for name, value, least in (("in_dim", in_dim, 1), ("dim", dim, 1), ("depth", depth, 1), ("heads", heads, 1),
                                   ("max_length", max_length, 2), ("beam_size", beam_size, 1)):
            _int_at_least(name, value, least)
        if out_dim <= len(SPECIALS):
            raise ConfigError(f"the target vocabulary has {out_dim} tokens; it needs words beyond {SPECIALS}")
        if dim % heads:
            raise ConfigError(f"heads: the width {dim} is not divisible by heads={heads}")
        if memory not in MEMORY_MODES:
            raise ConfigError(f"memory: {memory!r} is not allowed; allowed: {', '.join(MEMORY_MODES)}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {dropout}")
        self.in_dim, self.out_dim, self.dim = in_dim, out_dim, dim
        self.max_length = max_length
        self.memory = memory
        self.beam_size = beam_size
        self.length_penalty = float(length_penalty)
        longest = max_length - 1  # generated tokens after BOS
        self.max_new_tokens = min(_int_at_least("max_new_tokens", max_new_tokens, 1), longest) if max_new_tokens else longest

        self.memory_proj = nn.Linear(in_dim, dim) if in_dim != dim else nn.Identity()
        self.memory_norm = nn.LayerNorm(dim)
        self.null_memory = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        # embeddings ~ N(0, 1/dim) scaled by sqrt(dim) on input (unit-size tokens that the image
        # features added by cross-attention do not drown), unscaled as the tied output projection
        self.embed = nn.Embedding(out_dim, dim, padding_idx=PAD_ID)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD_ID].zero_()
        self.embed_scale = math.sqrt(dim)
        self.positions = LearnedPositionalEmbedding(max_length, dim, init_std=0.1)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerDecoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerDecoder(layer, depth, norm=nn.LayerNorm(dim))
        self.tie_embeddings = bool(tie_embeddings)
        if self.tie_embeddings:
            self.output_bias = nn.Parameter(torch.zeros(out_dim))
        else:
            self.output = nn.Linear(dim, out_dim)

    # ------------------------------------------------------------------ memory
    def memory_of(self, fused: FusionOutput) -> tuple[Tensor, Tensor]:
        """(memory [B, 1+T, dim], mask [B, 1+T] bool, True = real) from the fusion's output; the null token first."""
        pooled = fused.pooled.unsqueeze(1)  # [B, 1, in_dim]
        ones = torch.ones(pooled.shape[:2], dtype=torch.bool, device=pooled.device)
        mode = self.memory
        if mode == "auto":
            mode = "pooled" if fused.tokens is None else "tokens"
        if mode == "pooled":
            memory, mask = pooled, ones
        else:
            if fused.tokens is None:
                raise ConfigError(
                    f"caption_decoder memory: {mode!r} needs a fusion that returns tokens (fit, cross_attention, "
                    "bottleneck); use memory: pooled or auto"
                )
            tokens = fused.tokens
            if tokens.shape[-1] != self.in_dim:
                raise ValueError(f"fusion tokens have width {tokens.shape[-1]}, the decoder expects {self.in_dim}")
            token_mask = fused.mask if fused.mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            memory, mask = tokens, token_mask.bool()
            if mode == "both":
                memory, mask = torch.cat([pooled, tokens], dim=1), torch.cat([ones, mask], dim=1)
        memory = self.memory_norm(self.memory_proj(memory))
        null = self.null_memory.expand(memory.shape[0], 1, -1)
        return torch.cat([null, memory], dim=1), torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)

    # ------------------------------------------------------------------ decoding
    def logits(self, prefix: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Next-token logits [N, t, V] after every position of ``prefix`` [N, t] (causal)."""
        length = prefix.shape[1]
        if length > self.max_length:
            raise ValueError(f"decoder input of {length} tokens is longer than max_length={self.max_length}")
        x = self.drop(self.positions(self.embed(prefix) * self.embed_scale))  # [N, t, dim]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=x.device, dtype=x.dtype)
        usable, _ = safe_key_mask(memory_mask)  # never an all-masked row (memory_of always adds the null token)
        h = self.layers(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~usable)
        if self.tie_embeddings:
            return F.linear(h, self.embed.weight, self.output_bias)
        return self.output(h)

    def forward(self, fused: FusionOutput, targets: Tensor | None = None) -> Tensor:
        """Teacher forcing with ``targets`` [B, L] -> logits [B, L-1, V]; else generated ids [B, max_new_tokens]."""
        if targets is None:
            return self.generate(fused)
        memory, mask = self.memory_of(fused)
        return self.logits(targets[:, :-1].clamp(min=0), memory, mask)

    def generate(
        self,
        fused: FusionOutput,
        *,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
    ) -> Tensor:
        """Generated ids [B, max_new_tokens] (words, EOS, PAD); the head's settings unless given."""
        return self.generate_scored(
            fused, beam_size=beam_size, max_new_tokens=max_new_tokens, length_penalty=length_penalty
        ).tokens

    @torch.no_grad()
    def generate_scored(
        self,
        fused: FusionOutput,
        *,
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
        length_penalty: float | None = None,
    ) -> SearchResult:
        """Generated ids and each row's score (summed log-prob, or length-normalized for beams)."""
        beams = self.beam_size if beam_size is None else int(beam_size)
        steps = min(self.max_new_tokens if max_new_tokens is None else int(max_new_tokens), self.max_length - 1)
        memory, mask = self.memory_of(fused)
        if beams > 1:
            memory, mask = memory.repeat_interleave(beams, dim=0), mask.repeat_interleave(beams, dim=0)

        def step(prefix: Tensor) -> Tensor:
            logits = self.logits(prefix, memory, mask)[:, -1].float()  # [N, V]
            logits[:, list(_NEVER_GENERATED)] = float("-inf")
            return logits.log_softmax(dim=-1)

        result = search(
            step, memory.shape[0] // beams, beam_size=beams, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=PAD_ID,
            max_new_tokens=steps, length_penalty=self.length_penalty if length_penalty is None else length_penalty,
            device=memory.device,
        )
        if steps < self.max_new_tokens:  # keep the width fixed so that batches concatenate
            pad = result.tokens.new_full((result.tokens.shape[0], self.max_new_tokens - steps), PAD_ID)
            result = SearchResult(torch.cat([result.tokens, pad], dim=1), result.scores)
        return result


__all__ = ["CaptionDecoder", "MEMORY_MODES"]
