"""A malicious pickle planted wherever polyfuse reads weights is refused with a clear message and never runs.

The pickle's ``__reduce__`` would create a marker file when unpickled; every test checks that the
marker never appears, whichever way the file is handed to polyfuse (API and CLI).
"""

from __future__ import annotations

import builtins
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import polyfuse
from polyfuse.build import build_encoder
from polyfuse.checkpoint import MARKER, hashed_files, read_weights
from polyfuse.cli import app
from polyfuse.config import ComponentConfig, ConfigError
from polyfuse.errors import CheckpointError, PolyfuseError
from polyfuse.train.init import load_matching_weights
from polyfuse.types import InputSpec

runner = CliRunner()
TINY = [
    "train.epochs=1", "data.max_rows=32", "model.encoders.audio=sequence_stats", "train.threads=1", "train.progress=false",
]


class Payload:
    """Unpickling this creates ``path`` (a stand-in for arbitrary code)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (builtins.open, (self.path, "w"))


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "run"
    polyfuse.fit("tiny-avmnist", out=out, overrides=TINY)
    return out


@pytest.fixture()
def marker(tmp_path: Path):  # noqa: ANN201
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "the pickle was unpickled: its code ran"


def _raw_pickle(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    return path


def _torch_pickle(path: Path, marker: Path) -> Path:
    torch.save({"features.0.0.weight": torch.zeros(1), "evil": Payload(marker)}, str(path))  # zip + data.pkl
    return path


def _reseal(directory: Path) -> None:
    """What an attacker who can write the directory would do: record the planted file's checksum in COMPLETE."""
    import hashlib

    hashes = {n: hashlib.sha256((directory / n).read_bytes()).hexdigest() for n in hashed_files(directory)}
    (directory / MARKER).write_text(json.dumps({"sha256": hashes}))


@pytest.mark.parametrize("make", [_raw_pickle, _torch_pickle])
def test_pickle_as_model_safetensors_is_refused(make, run: Path, tmp_path: Path, marker: Path) -> None:  # noqa: ANN001
    target = shutil.copytree(run, tmp_path / "run")
    make(target / "model.safetensors", marker)
    with pytest.raises(CheckpointError, match="model.safetensors does not match"):
        polyfuse.load(target)  # the COMPLETE marker's checksum catches it first
    _reseal(target)
    with pytest.raises(CheckpointError, match="pickle.*never unpickles"):
        polyfuse.load(target)
    for command in (["eval", str(target)], ["predict", str(target), "--data", str(tmp_path / "rows.csv")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2 and "never unpickles" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("make", [_raw_pickle, _torch_pickle])
def test_pickle_as_last_ckpt_is_refused_on_resume(make, run: Path, tmp_path: Path, marker: Path) -> None:  # noqa: ANN001
    target = shutil.copytree(run, tmp_path / "run")
    make(target / "checkpoints" / "last.ckpt", marker)
    result = runner.invoke(app, ["train", "--out", str(target), "--resume"])
    assert result.exit_code == 2, result.output
    assert "cannot resume" in result.output and "pickle" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("make", [_raw_pickle, _torch_pickle])
def test_pickle_as_pth_weights_of_mobilenet_is_refused(make, tmp_path: Path, marker: Path) -> None:  # noqa: ANN001
    weights = make(tmp_path / "mobilenet_v2.pth", marker)
    spec = InputSpec(name="image", kind="image", channels=3, height=32, width=32)
    with pytest.raises(ConfigError, match="weights-only"):
        build_encoder(spec, ComponentConfig("mobilenet_v2", {"weights": str(weights)}), dim=8)
    # the same through a training run's config (the model is built after the data is read)
    result = runner.invoke(app, [
        "train", "tiny-avmnist", "--out", str(tmp_path / "out"), *TINY, "data.max_rows=8",
        "model.encoders.image.name=mobilenet_v2", f"model.encoders.image.weights={weights}",
    ])
    assert result.exit_code == 2 and "weights-only" in result.output and "Traceback" not in result.output, result.output


def test_pickle_given_as_safetensors_weights_is_refused(tmp_path: Path, marker: Path) -> None:
    weights = _raw_pickle(tmp_path / "mobilenet_v2.safetensors", marker)
    spec = InputSpec(name="image", kind="image", channels=3, height=32, width=32)
    with pytest.raises(ConfigError, match="not a readable safetensors"):
        build_encoder(spec, ComponentConfig("mobilenet_v2", {"weights": str(weights)}), dim=8)


@pytest.mark.parametrize("make", [_raw_pickle, _torch_pickle])
def test_ckpt_file_given_to_load_is_refused(make, tmp_path: Path, marker: Path) -> None:  # noqa: ANN001
    ckpt = make(tmp_path / "model.ckpt", marker)
    with pytest.raises(CheckpointError, match="never unpickles"):
        polyfuse.load(ckpt)
    result = runner.invoke(app, ["eval", str(ckpt)])
    assert result.exit_code == 2 and "never unpickles" in result.output


@pytest.mark.parametrize("name", ["pretrained.ckpt", "pretrained.pt", "pretrained.safetensors"])
def test_pickle_given_to_init_from_is_refused(name: str, run: Path, tmp_path: Path, marker: Path) -> None:
    source = _torch_pickle(tmp_path / name, marker)
    model = polyfuse.load(run).model
    with pytest.raises(CheckpointError, match="never"):
        load_matching_weights(model, source)
    result = runner.invoke(app, ["train", "tiny-avmnist", "--out", str(tmp_path / "out"), *TINY, f"init_from={source}"])
    assert result.exit_code == 2 and "never" in result.output and "Traceback" not in result.output, result.output


def test_planted_checkpoint_directory_for_init_from_is_refused(run: Path, tmp_path: Path, marker: Path) -> None:
    source = shutil.copytree(run, tmp_path / "pretrained")
    _torch_pickle(source / "model.safetensors", marker)
    _reseal(source)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_matching_weights(polyfuse.load(run).model, source)


def test_pickled_bin_weights_of_a_local_text_model_are_never_read(tmp_path: Path, marker: Path) -> None:
    from polyfuse.encoders.pretrained_text import load_text_config, load_text_model
    from polyfuse.weights import MINILM

    folder = tmp_path / "text-model"
    folder.mkdir()
    for file in MINILM.locate().iterdir():
        if file.suffix in (".json", ".txt"):
            shutil.copyfile(file, folder / file.name)
    _torch_pickle(folder / "pytorch_model.bin", marker)
    with pytest.raises(PolyfuseError, match="no .safetensors weights"):
        load_text_model(folder, load_text_config(folder))


def test_read_weights_names_what_it_refuses(tmp_path: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError, match="pickle/zip"):
        read_weights(_raw_pickle(tmp_path / "a.safetensors", marker))
    (tmp_path / "b.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        read_weights(tmp_path / "b.safetensors")
