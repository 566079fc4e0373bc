"""Text generation from fused features: search (greedy, beam), the teacher-forcing loss, BLEU / exact match.

Importing this package registers the ``sequence_cross_entropy`` objective.
"""

from polyfuse.generation.loss import SequenceCrossEntropy
from polyfuse.generation.metrics import generation_metrics, generation_scores
from polyfuse.generation.search import SearchResult, beam_search, greedy_search, search

__all__ = [
    "SearchResult", "SequenceCrossEntropy", "beam_search", "generation_metrics", "generation_scores",
    "greedy_search", "search",
]
