"""Retrieval metrics over a whole split: recall@K and median / mean rank.

Queries [Nq, D] and targets [Nt, D] are compared by cosine similarity. A target is relevant to
a query when their group ids are equal: by default a row's group is the row itself (its own
pair is the one right answer); with a label column, every row of the same class counts.
The rank of a query is 1 + the number of NON-relevant targets scoring at least as high as
its best relevant target (ties count against the query, so a collapsed space that scores
everything the same ranks last, not first). Queries with no relevant target are left out.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def ranks_from_scores(scores: Tensor, relevant: Tensor) -> Tensor:
    """Rank [Nq] (1 = first) of the best relevant target per query, from ``scores`` [Nq, Nt] and
    ``relevant`` [Nq, Nt] bool; 0 for queries without any relevant target."""
    best = scores.masked_fill(~relevant, float("-inf")).max(dim=1).values  # [Nq]
    above = ((scores >= best[:, None]) & ~relevant).sum(dim=1)
    return torch.where(relevant.any(dim=1), above + 1, torch.zeros_like(above))


def query_ranks(
    queries: Tensor, targets: Tensor, query_groups: Tensor, target_groups: Tensor, chunk: int = 1024
) -> tuple[Tensor, Tensor]:
    """(ranks [Nq], relevant targets per query [Nq]) by cosine similarity, ``chunk`` queries at a time."""
    q = F.normalize(queries.float(), dim=-1)
    t = F.normalize(targets.float(), dim=-1)
    ranks, counts = [], []
    for start in range(0, q.shape[0], chunk):
        scores = q[start : start + chunk] @ t.T  # [c, Nt]
        relevant = query_groups[start : start + chunk, None] == target_groups[None, :]
        ranks.append(ranks_from_scores(scores, relevant))
        counts.append(relevant.sum(dim=1))
    if not ranks:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(ranks), torch.cat(counts)


def summarize_ranks(ranks: Tensor, relevant_counts: Tensor, num_targets: int, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """``R@k`` (fraction of queries ranked <= k), ``median_rank``, ``mean_rank``, ``queries``, ``targets``
    and ``chance_R@1`` (the R@1 of a random ranking) for the queries that have a relevant target."""
    usable = ranks > 0
    r = ranks[usable].float()
    out: dict[str, float] = {}
    for k in ks:
        out[f"R@{k}"] = float((r <= k).float().mean()) if r.numel() else float("nan")
    out["median_rank"] = float(r.median()) if r.numel() else float("nan")
    out["mean_rank"] = float(r.mean()) if r.numel() else float("nan")
    out["queries"] = int(r.numel())
    out["targets"] = int(num_targets)
    counts = relevant_counts[usable].float()
    out["chance_R@1"] = float((counts / max(num_targets, 1)).mean()) if r.numel() else float("nan")
    return out


def retrieval_metrics(
    queries: Tensor,
    targets: Tensor,
    query_groups: Tensor | None = None,
    target_groups: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@K and ranks of ``queries`` [Nq, D] against ``targets`` [Nt, D] (cosine similarity).

    Without groups, query i's one relevant target is target i (Nq must equal Nt).
    """
    if query_groups is None or target_groups is None:
        if queries.shape[0] != targets.shape[0]:
            raise ValueError(f"{queries.shape[0]} queries and {targets.shape[0]} targets: give groups to pair them")
        query_groups = target_groups = torch.arange(queries.shape[0])
    ranks, counts = query_ranks(queries, targets, query_groups.long(), target_groups.long())
    return summarize_ranks(ranks, counts, targets.shape[0], ks)


__all__ = ["query_ranks", "ranks_from_scores", "retrieval_metrics", "summarize_ranks"]
