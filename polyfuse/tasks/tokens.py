"""Token ids of text targets (generation tasks): the special ids, a row's word ids, the target length."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
#: Longest target in tokens, BOS and EOS included, unless ``tasks.<name>.target.max_length`` says otherwise.
DEFAULT_MAX_LENGTH = 32


def strip_special(ids: Sequence[int] | np.ndarray) -> list[int]:
    """Word ids of one generated or target row: a leading BOS dropped, cut at EOS, PAD dropped."""
    out = []
    for position, token in enumerate(int(i) for i in ids):
        if token == EOS_ID:
            break
        if token == PAD_ID or (token == BOS_ID and position == 0):
            continue
        out.append(token)
    return out


def target_max_length(task: Any) -> int:
    """Longest target of a generation task in tokens (BOS and EOS included)."""
    return int(task.target.get("max_length", DEFAULT_MAX_LENGTH))
