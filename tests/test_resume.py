"""Interrupted runs: SIGKILL then --resume gives the uninterrupted run exactly; half-written output is refused."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.errors import CheckpointError
from polyfuse.safe_state import load_state

runner = CliRunner()
#: The tiny-avmnist recipe, smaller and faster: 64 rows per split, 4 batches per epoch.
OVERRIDES = [
    "train.epochs=4", "data.max_rows=64", "model.encoders.audio=sequence_stats", "train.threads=1",
    "train.progress=false",
]
TIMING_KEYS = ("train_seconds",)


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _last_state(run: Path) -> dict[str, torch.Tensor]:
    return load_state(run / "checkpoints" / "last.ckpt")["state_dict"]


def _metrics(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def assert_same_run(a: Path, b: Path, *, history: bool = True) -> None:
    """Bitwise-equal weights (final model and last training state), equal metrics and (optionally) history."""
    for load in (_weights, _last_state):
        wa, wb = load(a), load(b)
        assert wa.keys() == wb.keys()
        for key in wa:
            assert torch.equal(wa[key], wb[key]), f"{load.__name__}: {key} differs"
    assert _metrics(a) == _metrics(b)
    if history:
        assert json.loads((a / "history.json").read_text()) == json.loads((b / "history.json").read_text())


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "polyfuse.cli", *args]


@pytest.mark.slow
def test_sigkill_at_a_random_point_then_resume_matches_the_uninterrupted_run(tmp_path: Path) -> None:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    command = _cli("train", "tiny-avmnist", "--out", str(full), *OVERRIDES)
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    train_seconds = json.loads((full / "metrics.json").read_text())["train_seconds"]

    log = tmp_path / "killed.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            _cli("train", "tiny-avmnist", "--out", str(killed), *OVERRIDES),
            env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        )
    last = killed / "checkpoints" / "last.ckpt"
    while not last.is_file():
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.02)
    # the first epoch has ended: kill at a random moment of the rest (printed so a failure can be replayed)
    delay = random.uniform(0.0, 0.6 * train_seconds)
    print(f"SIGKILL {delay:.2f} s after the first checkpoint")
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it was killed: raise train.epochs"
    assert not (killed / "COMPLETE").exists()
    with pytest.raises(CheckpointError, match="COMPLETE is missing"):
        polyfuse.load(killed)  # an interrupted run is never loaded as a model

    resumed = subprocess.run(_cli("train", "--out", str(killed), "--resume"), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(full, killed)
    assert not list((killed / "checkpoints").glob(".*.tmp-*"))


class _Crash(L.Callback):
    """Raises when a given optimizer step is about to start (a crash in the middle of an epoch)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash before step {self.step}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    polyfuse.fit("tiny-avmnist", out=out, overrides=[*OVERRIDES, "train.checkpoint_every_n_steps=2"])
    return out


def test_mid_epoch_checkpoint_resumes_exactly(uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polyfuse.train.runner as runner_module

    out = tmp_path / "crashed"
    progress = runner_module._progress_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(runner_module, "_progress_callbacks", lambda show: [*progress(show), _Crash(step=6)])
        with pytest.raises(RuntimeError, match="simulated crash"):
            polyfuse.fit("tiny-avmnist", out=out, overrides=[*OVERRIDES, "train.checkpoint_every_n_steps=2"])
    state = load_state(out / "checkpoints" / "last.ckpt")
    assert (state["global_step"], state["epoch"]) == (6, 1)  # 2 of epoch 1's 4 batches were done
    polyfuse.fit("tiny-avmnist", out=out, resume=True)
    assert_same_run(uninterrupted, out, history=False)
    # every epoch's validation and the epochs after the crash are the same; the train loss of the
    # crashed epoch averages only the batches after the resume (Lightning does not checkpoint it)
    a, b = (json.loads((run / "history.json").read_text()) for run in (uninterrupted, out))
    for row_a, row_b in zip(a, b, strict=True):
        keys = [k for k in row_a if not (k == "train/loss" and row_a["epoch"] == 1)]
        assert {k: row_a[k] for k in keys} == {k: row_b[k] for k in keys}


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to, symlinks=True)
    return to


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no marker", "COMPLETE is missing"),
        ("weights changed", "model.safetensors does not match"),
        ("config changed", "config.yaml does not match"),
        ("pipeline changed", "pipeline/pipeline.json does not match"),
        ("pipeline file added", "was added after"),
    ],
)
def test_a_half_written_or_changed_model_directory_is_refused(
    damage: str, message: str, uninterrupted: Path, tmp_path: Path
) -> None:
    run = _copy(uninterrupted, tmp_path / "run")
    if damage == "no marker":
        (run / "COMPLETE").unlink()
    elif damage == "weights changed":
        data = bytearray((run / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (run / "model.safetensors").write_bytes(bytes(data))
    elif damage == "config changed":
        (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("dim: 16", "dim: 17"))
    elif damage == "pipeline changed":
        pipeline = run / "pipeline" / "pipeline.json"
        pipeline.write_text(pipeline.read_text() + "\n")
    else:
        (run / "pipeline" / "extra.tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match=message):
        polyfuse.load(run)
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_the_intact_model_directory_loads_and_evaluates(uninterrupted: Path) -> None:
    result = runner.invoke(app, ["eval", str(uninterrupted), "--json"])
    assert result.exit_code == 0, result.output
    accuracy = json.loads(result.output)["metrics"]["digit"]["acc"]
    assert accuracy == pytest.approx(_metrics(uninterrupted)["test"]["digit"]["acc"])


def test_a_truncated_last_checkpoint_is_refused_on_resume(uninterrupted: Path, tmp_path: Path) -> None:
    run = _copy(uninterrupted, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])
    result = runner.invoke(app, ["train", "--out", str(run), "--resume"])
    assert result.exit_code == 2, result.output
    assert "cannot resume" in result.output and str(last) in result.output and "Traceback" not in result.output
    assert last.read_bytes() == data[: len(data) // 3]  # left as it was, for the user to look at


def test_resume_needs_the_runs_own_config_and_pipeline(uninterrupted: Path, tmp_path: Path) -> None:
    run = _copy(uninterrupted, tmp_path / "run")
    shutil.rmtree(run / "pipeline")  # a refit pipeline could differ from the one the weights learned with
    with pytest.raises(CheckpointError, match="pipeline is missing"):
        polyfuse.fit("tiny-avmnist", out=run, resume=True)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        polyfuse.fit("tiny-avmnist", out=tmp_path / "empty", resume=True)
