"""A Lightning CheckpointIO that never pickles: tensors in safetensors, everything else as JSON
(the format and the atomic writes are ``polyfuse.safe_state``'s)."""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

from lightning.pytorch.plugins.io import CheckpointIO

from polyfuse.safe_state import load_state, save_state


class SafeCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO: atomic safetensors + JSON, no pickle in either direction."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        save_state(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Optional[Callable] = None, weights_only: Optional[bool] = None
    ) -> dict[str, Any]:
        return load_state(path)

    def remove_checkpoint(self, path: Any) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
