"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``: this folder is on sys.path)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any


def warn_if_busy() -> None:
    """Other processes on the CPUs make multi-threaded torch ops stall (oversubscription): say so."""
    import torch

    load, cpus = os.getloadavg()[0], os.cpu_count() or 1
    if load > 0.5 * cpus and torch.get_num_threads() > 1:
        print(f"warning: load average {load:.1f} on {cpus} CPUs with {torch.get_num_threads()} torch threads; "
              "timings will be noisy (try --threads 1)", file=sys.stderr)


def machine_info(**extra: Any) -> dict[str, Any]:
    """Platform, Python, torch, CPU count and load average, for a result's JSON."""
    import torch

    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "load_average": os.getloadavg(), **extra}


def write_results(out: Path, markdown: str, report: Any) -> None:
    """``out`` (markdown) and the JSON beside it (same name, ``.json``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out} and {out.with_suffix('.json')}", file=sys.stderr)
