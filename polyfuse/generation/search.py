"""Batched greedy and beam search over any next-token model.

The model is a ``step`` function: ``step(prefix [N, t] long) -> log-probs [N, V]`` of the
next token. Prefixes start with BOS. Row ``n`` of a beam search's prefixes belongs to
batch row ``n // beam_size`` (beams of one row are consecutive), so a model that keeps
per-row context (an image's memory) repeats it with ``repeat_interleave(beam_size)``.

Both searches return ``tokens`` [B, max_new_tokens]: the generated ids without BOS, the
first EOS kept, PAD after it; and ``scores`` [B]: the summed log-probability (greedy) or
the length-normalized score ``sum log p / length ** length_penalty`` (beam) of that row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

StepFn = Callable[[Tensor], Tensor]


@dataclass
class SearchResult:
    tokens: Tensor  # [B, max_new_tokens] long
    scores: Tensor  # [B] float


def _check(max_new_tokens: int, beam_size: int = 1) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")


def _padded(tokens: Tensor, width: int, pad_id: int) -> Tensor:
    """[N, t] -> [N, width], right padded with PAD."""
    if tokens.shape[1] >= width:
        return tokens[:, :width]
    return torch.cat([tokens, tokens.new_full((tokens.shape[0], width - tokens.shape[1]), pad_id)], dim=1)


@torch.no_grad()
def greedy_search(
    step: StepFn,
    batch_size: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    device: torch.device | str | None = None,
) -> SearchResult:
    """The most likely next token at every step until EOS (every row) or ``max_new_tokens``."""
    _check(max_new_tokens)
    prefix = torch.full((batch_size, 1), bos_id, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=prefix.device)
    scores = torch.zeros(batch_size, device=prefix.device)
    for _ in range(max_new_tokens):
        logp = step(prefix).float()  # [B, V]
        best, token = logp.max(dim=-1)
        token = torch.where(finished, torch.full_like(token, pad_id), token)
        scores = scores + torch.where(finished, torch.zeros_like(best), best)
        prefix = torch.cat([prefix, token[:, None]], dim=1)
        finished = finished | (token == eos_id)
        if bool(finished.all()):
            break
    return SearchResult(_padded(prefix[:, 1:], max_new_tokens, pad_id), scores)


@torch.no_grad()
def beam_search(
    step: StepFn,
    batch_size: int,
    *,
    beam_size: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    device: torch.device | str | None = None,
) -> SearchResult:
    """Keep the ``beam_size`` best prefixes per row; the best finished one by normalized score wins.

    A beam that produced EOS stays in the beam with its score, extended by PAD at no cost, so
    it competes with the open beams until the end. Candidates are ranked by summed log-prob
    while searching; the final choice divides by ``length ** length_penalty`` (length in
    generated tokens, EOS included; 0 = no normalization, 1 = mean log-prob).
    Stops when every beam of every row has finished, or after ``max_new_tokens``.
    """
    _check(max_new_tokens, beam_size)
    b, k = batch_size, beam_size
    prefix = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)
    dev = prefix.device
    scores = torch.full((b, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # every beam starts equal: keep one so that the first step gives k different ones
    finished = torch.zeros(b, k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(b, k, device=dev)
    offsets = (torch.arange(b, device=dev) * k)[:, None]  # [B, 1]
    for _ in range(max_new_tokens):
        logp = step(prefix).float()  # [B*K, V]
        vocab = logp.shape[-1]
        logp = logp.view(b, k, vocab)
        pad_only = torch.full((vocab,), float("-inf"), device=dev)
        pad_only[pad_id] = 0.0
        logp = torch.where(finished[..., None], pad_only, logp)
        candidates = (scores[..., None] + logp).view(b, k * vocab)
        scores, index = candidates.topk(k, dim=-1)  # [B, K]
        source, token = index // vocab, index % vocab
        was_finished = finished.gather(1, source)
        token = torch.where(was_finished, torch.full_like(token, pad_id), token)
        lengths = lengths.gather(1, source) + (~was_finished).float()
        finished = was_finished | (token == eos_id)
        prefix = torch.cat([prefix[(offsets + source).view(-1)], token.view(-1, 1)], dim=1)
        if bool(finished.all()):
            break
    normalized = scores / lengths.clamp(min=1.0) ** float(length_penalty)
    normalized = torch.where(torch.isnan(normalized), torch.full_like(normalized, float("-inf")), normalized)
    best = normalized.argmax(dim=-1)  # [B]
    chosen = prefix.view(b, k, -1)[torch.arange(b, device=dev), best, 1:]
    return SearchResult(_padded(chosen, max_new_tokens, pad_id), normalized.gather(1, best[:, None]).squeeze(1))


def search(
    step: StepFn,
    batch_size: int,
    *,
    beam_size: int = 1,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    device: torch.device | str | None = None,
) -> SearchResult:
    """Greedy search for ``beam_size == 1``, beam search otherwise."""
    if beam_size == 1:
        return greedy_search(step, batch_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                             max_new_tokens=max_new_tokens, device=device)
    return beam_search(step, batch_size, beam_size=beam_size, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id,
                       max_new_tokens=max_new_tokens, length_penalty=length_penalty, device=device)


__all__ = ["SearchResult", "StepFn", "beam_search", "greedy_search", "search"]
