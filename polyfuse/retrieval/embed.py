"""Embed whole splits in the retrieval spaces of a model's objectives, and evaluate retrieval on them.

A retrieval space is any objective deriving from ``RetrievalSpace`` (``contrastive``,
``translation``). Its embeddings are computed from the encoders alone (no fusion), for every
row of a split; a row's embedding of an input counts only where that input is present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import math

import torch
from torch import Tensor, nn

from polyfuse.objectives.contrastive import RetrievalSpace
from polyfuse.retrieval.metrics import query_ranks, summarize_ranks


@dataclass
class SplitEmbeddings:
    """One objective's embeddings of a split: ``vectors[key]`` [N, D] (absent rows included, zeros or
    meaningless), ``present[key]`` [N] bool, ``rows`` [N] (row numbers in the source table)."""

    rows: Tensor
    vectors: dict[str, Tensor] = field(default_factory=dict)
    present: dict[str, Tensor] = field(default_factory=dict)

    def of(self, key: str) -> tuple[Tensor, Tensor]:
        """(embeddings [n, D], rows [n]) of the rows where ``key``'s input is present."""
        keep = self.present[key]
        return self.vectors[key][keep], self.rows[keep]


def retrieval_objectives(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, RetrievalSpace]:
    """The model's objectives that define a retrieval space (all, or ``names`` in that order)."""
    from polyfuse.config import ConfigError

    objectives = getattr(model, "objectives", {})
    spaces = {n: o for n, o in objectives.items() if isinstance(o, RetrievalSpace)}
    if names is None:
        return spaces
    unknown = [n for n in names if n not in spaces]
    if unknown:
        raise ConfigError(
            f"objective: {unknown[0]!r} is not a retrieval objective of this model; allowed: {', '.join(spaces) or '(none)'}"
        )
    return {n: spaces[n] for n in names}


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


@torch.no_grad()
def embed_batches(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    spaces: Mapping[str, RetrievalSpace],
    device: str | torch.device = "cpu",
) -> dict[str, SplitEmbeddings]:
    """Embeddings of every batch in every space (one encoder pass per batch), concatenated."""
    model.eval()
    device = torch.device(device)
    rows: list[Tensor] = []
    vectors: dict[str, dict[str, list[Tensor]]] = {n: {} for n in spaces}
    present: dict[str, dict[str, list[Tensor]]] = {n: {} for n in spaces}
    for batch in batches:
        batch = _move(batch, device)
        features = model.encode(batch["inputs"])
        rows.append(batch["row"].cpu())
        for name, space in spaces.items():
            for key, value in space.retrieval_embeddings(features, model).items():
                vectors[name].setdefault(key, []).append(value.float().cpu())
                present[name].setdefault(key, []).append(batch["present"][key].bool().cpu())
    all_rows = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    return {
        name: SplitEmbeddings(
            rows=all_rows,
            vectors={k: torch.cat(v) for k, v in vectors[name].items()},
            present={k: torch.cat(v) for k, v in present[name].items()},
        )
        for name in spaces
    }


def group_codes(rows: Tensor, groups: Mapping[int, Any] | None) -> Tensor:
    """Integer relevance groups of ``rows``: the row itself, or a code per value of ``groups[row]``
    (a row whose value is missing forms a group of its own)."""
    if groups is None:
        return rows.long()
    codes: dict[Any, int] = {}
    out = []
    for row in rows.tolist():
        value = groups.get(int(row))
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(-(int(row) + 1))
        else:
            out.append(codes.setdefault(value, len(codes)))
    return torch.tensor(out, dtype=torch.long)


def evaluate_embeddings(
    embeddings: Mapping[str, SplitEmbeddings],
    spaces: Mapping[str, RetrievalSpace],
    ks: Sequence[int] = (1, 5, 10),
    groups: Mapping[int, Any] | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{objective: {"query->target": metrics}}`` for every direction of every space."""
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name, space in spaces.items():
        emb = embeddings[name]
        per_direction = {}
        for query, target in space.retrieval_directions():
            q, q_rows = emb.of(query)
            t, t_rows = emb.of(target)
            if q.shape[0] == 0 or t.shape[0] == 0:
                continue
            ranks, counts = query_ranks(q, t, group_codes(q_rows, groups), group_codes(t_rows, groups))
            per_direction[f"{query}->{target}"] = summarize_ranks(ranks, counts, t.shape[0], ks)
        result[name] = per_direction
    return result


def evaluate_retrieval(
    model: nn.Module,
    make_batches: Callable[[], Iterable[Mapping[str, Any]]],
    *,
    ks: Sequence[int] = (1, 5, 10),
    groups: Mapping[int, Any] | None = None,
    objectives: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, dict[str, float]]]:
    """Retrieval metrics of a whole split (``make_batches()`` yields its batches in order); {} without spaces."""
    spaces = retrieval_objectives(model, objectives)
    if not spaces:
        return {}
    return evaluate_embeddings(embed_batches(model, make_batches(), spaces, device), spaces, ks, groups)


def split_groups(dataset: Any, column: str | None) -> dict[int, Any] | None:
    """Row number -> value of ``column`` in a MultimodalDataset's table (None when no column is given)."""
    if column is None:
        return None
    from polyfuse.errors import DataError

    frame = dataset.frame
    if column not in frame.columns:
        raise DataError(
            f"retrieval.match: column {column!r} not in the manifest; columns present: {', '.join(map(str, frame.columns))}",
            file=getattr(dataset, "source", None),
        )
    return {int(i): v for i, v in zip(frame.index, frame[column].tolist())}


def retrieval_for_splits(
    model: nn.Module,
    config: Any,
    datasets: Mapping[str, Any],
    collate: Any,
    batch_size: int,
    splits: Sequence[str] = ("valid", "test"),
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{split: {objective: {direction: metrics}}}`` for the given splits of a run (config.retrieval options)."""
    from torch.utils.data import DataLoader, Subset

    if not retrieval_objectives(model):
        return {}
    options = config.retrieval
    out = {}
    for split in splits:
        dataset = datasets.get(split)
        if dataset is None or len(dataset) == 0:
            continue
        subset = dataset if options.max_rows is None else Subset(dataset, range(min(options.max_rows, len(dataset))))

        def make(subset: Any = subset) -> DataLoader:
            return DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=0)

        result = evaluate_retrieval(model, make, ks=options.ks, groups=split_groups(dataset, options.match))
        if result:
            out[split] = result
    return out


__all__ = [
    "SplitEmbeddings",
    "embed_batches",
    "evaluate_embeddings",
    "evaluate_retrieval",
    "group_codes",
    "retrieval_for_splits",
    "retrieval_objectives",
    "split_groups",
]
