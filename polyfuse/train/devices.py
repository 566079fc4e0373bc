"""Checks of the device options (``train.accelerator / strategy / devices / num_nodes``) before any data is read.

Lightning would refuse a bad value too, but only when the Trainer is built, after the data was
prepared, and with a traceback. These checks give one line naming the key and what is allowed.
"""

from __future__ import annotations

from typing import Any

import torch

from polyfuse.errors import ConfigError

AUTO = "auto"


def _accelerators() -> dict[str, bool]:
    """Accelerator name -> available on this machine (``gpu`` = cuda or mps)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    out = {name: bool(AcceleratorRegistry[name]["accelerator"].is_available()) for name in AcceleratorRegistry.available_accelerators()}
    out["gpu"] = out.get("cuda", False) or out.get("mps", False)
    return out


def _strategies() -> list[str]:
    from lightning.pytorch.strategies import StrategyRegistry

    return sorted(StrategyRegistry.available_strategies())


def _device_count(devices: Any) -> int | None:
    """Number of devices asked for; None for ``auto`` / -1 (all); ConfigError for anything else that is not valid."""
    bad = ConfigError(
        f"train.devices: {devices!r} is not a device count; use a positive number, -1 (all), 'auto', "
        "or a list of device indices such as [0, 1]"
    )
    if isinstance(devices, bool):
        raise bad
    if isinstance(devices, str):
        text = devices.strip()
        if text == AUTO or text == "-1":
            return None
        if "," in text:
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts or not all(p.isdigit() for p in parts):
                raise bad
            return len(parts)
        if not text.isdigit():
            raise bad
        devices = int(text)
    if isinstance(devices, int):
        if devices == -1:
            return None
        if devices < 1:
            raise bad
        return devices
    if isinstance(devices, (list, tuple)):
        if not devices or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices):
            raise bad
        return len(devices)
    raise bad


def check_device_options(accelerator: Any = AUTO, strategy: Any = AUTO, devices: Any = 1, num_nodes: Any = 1) -> None:
    """ConfigError (one line, the key path first) when a device option is unknown or cannot work here."""
    available = _accelerators()
    name = str(accelerator).strip().lower()
    if name != AUTO:
        if name not in available:
            allowed = ", ".join([AUTO, *sorted(available)])
            raise ConfigError(f"train.accelerator: {accelerator!r} is not an accelerator; allowed: {allowed}")
        if not available[name]:
            here = ", ".join(sorted(n for n, ok in available.items() if ok)) or "none"
            raise ConfigError(f"train.accelerator: {accelerator!r} is not available on this machine (available: {here})")
    if str(strategy).strip() != AUTO and str(strategy).strip() not in _strategies():
        main = [n for n in _strategies() if "find_unused" not in n]
        raise ConfigError(f"train.strategy: {strategy!r} is not a Lightning strategy; allowed: {AUTO}, {', '.join(main)} "
                          "(and the ddp*_find_unused_parameters_* variants)")
    chosen = str(strategy).strip()
    if chosen.startswith(("fsdp", "deepspeed")) and not available.get("cuda", False):
        raise ConfigError(
            f"train.strategy: {chosen!r} shards parameters across GPUs and this machine has none "
            f"(available accelerators: {', '.join(sorted(n for n, ok in available.items() if ok))}); "
            "use --strategy ddp (CPU processes) or auto"
        )
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
        raise ConfigError(f"train.num_nodes: must be a positive number of machines, got {num_nodes!r}")
    count = _device_count(devices)
    if count is not None and name in ("cuda", "gpu") and available.get("cuda") and count > torch.cuda.device_count():
        raise ConfigError(f"train.devices: {count} GPUs asked for, this machine has {torch.cuda.device_count()}")


def check_train_devices(train: Any) -> None:
    """``check_device_options`` on a TrainConfig."""
    check_device_options(train.accelerator, train.strategy, train.devices, train.num_nodes)
