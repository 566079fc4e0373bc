"""Cross-modal retrieval: embeddings of whole splits, recall@K / median rank, and an index to search.

``evaluate_retrieval`` / ``retrieval_for_splits`` (after training), ``retrieval_metrics``
(hand-made similarity checks), ``build_index`` + ``search`` / ``SearchIndex`` (``polyfuse index
build`` and ``polyfuse search``).
"""

from polyfuse.retrieval.embed import embed_batches, evaluate_retrieval, retrieval_for_splits, retrieval_objectives
from polyfuse.retrieval.index import SearchIndex, build_index, search
from polyfuse.retrieval.metrics import query_ranks, ranks_from_scores, retrieval_metrics, summarize_ranks

__all__ = [
    "SearchIndex",
    "build_index",
    "embed_batches",
    "evaluate_retrieval",
    "query_ranks",
    "ranks_from_scores",
    "retrieval_for_splits",
    "retrieval_metrics",
    "retrieval_objectives",
    "search",
    "summarize_ranks",
]
