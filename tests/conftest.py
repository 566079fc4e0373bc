"""Fixtures shared by several test files: real AV-MNIST rows and one tiny trained model per session."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

import polyfuse

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): one torch thread each, or two
    # workers' thread pools fight over the same cores
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module (tiny models gain nothing from more; a shared machine loses a lot)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def keep_torch_threads() -> Iterator[None]:
    """Runs in a module may set torch to one thread (train.threads: 1); the next module gets its setting back."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def avmnist() -> Any:
    """The built-in AV-MNIST dataset (manifests + files, built once in the polyfuse cache)."""
    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    return DATASETS.get("avmnist").factory()


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny AV-MNIST model per session, shared by the deployment and server tests."""
    out = tmp_path_factory.getbasetemp() / "deploy-tiny-avmnist"
    if not (out / "COMPLETE").is_file():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            previous = torch.get_num_threads()
            polyfuse.fit("tiny-avmnist", out=out, overwrite=True, overrides=["train.threads=1"])
            torch.set_num_threads(previous)
    return out


def emoji_font_or_skip() -> Path:
    """The Noto Color Emoji font (the dataset's own lookup), or a skip that says what to install."""
    from polyfuse.data.datasets.emoji import FONT_FILE, font_path

    found = font_path()
    if found is None:
        pytest.skip(f"needs the Noto Color Emoji font, not found by polyfuse.data.datasets.emoji.font_path ({FONT_FILE.hint})")
    return found
