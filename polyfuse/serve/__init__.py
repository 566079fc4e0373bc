"""HTTP serving of a trained or exported model (FastAPI + uvicorn): ``create_app(ckpt) -> FastAPI``."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from polyfuse.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'polyfuse.serve' has no attribute {name!r}")


__all__ = ["create_app"]
