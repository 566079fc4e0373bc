"""Features of recently extracted input batches, shared by every fixed-feature encoder of a process.

Evaluation passes over the same rows again and again: the modality contribution re-runs the model
without each input, and the members of an ensemble often carry the same frozen backbone. A fixed
extractor returns the same features for the same input batch, so each batch is extracted once:
entries are keyed by the extractor's fingerprint (class, options, fixed tensors) and the batch's
content (every tensor's dtype, shape and bytes), so a changed extractor or a changed batch misses.
It is consulted only inside ``remembering_extractions()`` (the end-of-run evaluation, ensemble
building), only without gradients, and emptied when that block ends; the least recently used
entries leave above ``max_bytes``. Serving and ``predict`` never hold features.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor

DEFAULT_MAX_BYTES = 256 * 2**20  # 256 MiB of features


class ExtractionMemo:
    """An LRU of extracted features [B, F] by (fingerprint, batch content)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[str, Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.depth = 0  # nested remembering_extractions() blocks open

    @property
    def active(self) -> bool:
        return self.depth > 0

    @staticmethod
    def key(fingerprint: str, inputs: Mapping[str, Tensor]) -> str:
        digest = hashlib.blake2b(fingerprint.encode(), digest_size=20)
        digest.update(repr(torch.is_autocast_enabled()).encode())
        for name in sorted(inputs):
            tensor = inputs[name]
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|{tensor.device}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def get_or_extract(self, fingerprint: str, inputs: Mapping[str, Tensor], extract: Callable[[], Tensor]) -> Tensor:
        """The features of ``inputs``: remembered, or ``extract()``-ed and remembered."""
        key = self.key(fingerprint, inputs)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        features = extract()
        size = features.numel() * features.element_size()
        if size <= self.max_bytes:
            self._entries[key] = features
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= old.numel() * old.element_size()
        return features

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self.hits = self.misses = 0


#: The process-wide memo every FeatureEncoder consults when evaluating.
MEMO = ExtractionMemo()


@contextmanager
def remembering_extractions() -> Iterator[ExtractionMemo]:
    """Within the block, fixed-feature encoders extract each evaluated batch once (see the module doc)."""
    MEMO.depth += 1
    try:
        yield MEMO
    finally:
        MEMO.depth -= 1
        if MEMO.depth == 0:
            MEMO.clear()
