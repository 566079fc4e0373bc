"""Device options are checked with the config, before any data is read: one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyfuse.cli import app
from polyfuse.config import Config, ConfigError
from polyfuse.train.devices import check_device_options

runner = CliRunner()


@pytest.mark.parametrize(
    "flags, key",
    [
        (["--strategy", "bogus"], "train.strategy: 'bogus' is not a Lightning strategy"),
        (["--accelerator", "tpu"], "train.accelerator: 'tpu' is not available on this machine"),
        (["--accelerator", "quantum"], "train.accelerator: 'quantum' is not an accelerator; allowed: auto, cpu"),
        (["--devices", "0"], "train.devices: '0' is not a device count"),
        (["--devices", "two"], "train.devices: 'two' is not a device count"),
        (["--num-nodes", "0"], "train.num_nodes: must be a positive number"),
        pytest.param(["--strategy", "fsdp"], "train.strategy: 'fsdp' shards parameters across GPUs and this machine has none",
                     marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
    ],
)
def test_bad_device_flags_fail_in_one_line_before_data_is_read(tmp_path: Path, flags: list[str], key: str) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "tiny-avmnist", "--out", str(out), *flags])
    assert result.exit_code == 2, result.output
    assert key in result.output and "Traceback" not in result.output
    assert not out.exists()  # nothing was prepared or written


def test_the_same_checks_hold_for_a_config_and_accept_what_lightning_accepts() -> None:
    from polyfuse.train.devices import check_train_devices

    for devices in (1, "1", "auto", -1, [0], "0,1"):
        check_device_options("cpu", "auto", devices, 1)
    check_device_options("auto", "ddp", 2, 2)
    check_device_options("cpu", "ddp_spawn", 2, 1)
    config = Config.from_dict({"train": {"strategy": "fsdpp"}})
    with pytest.raises(ConfigError, match="train.strategy: 'fsdpp'"):
        check_train_devices(config.train)
    with pytest.raises(ConfigError, match="train.devices"):
        check_device_options("cpu", "auto", [0, -1], 1)
