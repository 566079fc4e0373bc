"""Size of saved models: ``model.safetensors`` on disk against the bytes of every tensor it gives back.

Usage::

    python benchmarks/bench_model_size.py runs/bench-tables/runs/*-medium

``model.safetensors`` stores identical tensors once (an ensemble's members that carry the same
frozen MiniLM or MobileNetV2 hold one copy each in memory): this prints, per run directory, the
file's size, the bytes of all its keys as ``read_weights`` returns them (what the file held before
that change), how many keys are stored as another's alias, and the ensemble's members. Writes
``benchmarks/results/bench_model_size.md`` and ``.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _common import machine_info, write_results  # benchmarks/_common.py


def measure(run: Path) -> dict[str, Any]:
    from safetensors import safe_open

    from polyfuse.checkpoint import ALIASES_KEY, read_weights
    from polyfuse.config import Config

    path = run / "model.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        aliases = json.loads((fh.metadata() or {}).get(ALIASES_KEY, "{}"))
        stored = len(list(fh.keys()))
    state = read_weights(path)
    config = Config.from_yaml(run / "config.yaml")
    members = len(config.model.ensemble)
    return {
        "run": str(run), "file_bytes": path.stat().st_size,
        "all_keys_bytes": sum(t.numel() * t.element_size() for t in state.values()),
        "keys": len(state), "stored": stored, "aliases": len(aliases), "ensemble_members": members,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="model directories")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_model_size.md")
    args = parser.parse_args(argv)
    rows = [measure(run) for run in args.runs if (run / "model.safetensors").is_file()]
    if not rows:
        print("error: no model.safetensors under the given directories", file=sys.stderr)
        return 2
    lines = [
        "## Saved model size: identical tensors stored once\n",
        f"Command: `python benchmarks/bench_model_size.py {' '.join(str(r) for r in args.runs)}`\n",
        "| run | ensemble members | keys | stored | aliases | model.safetensors (MB) | all keys (MB) | smaller by |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {Path(r['run']).name} | {r['ensemble_members'] or '-'} | {r['keys']} | {r['stored']} | {r['aliases']} | "
            f"{r['file_bytes'] / 1e6:.1f} | {r['all_keys_bytes'] / 1e6:.1f} | {r['all_keys_bytes'] / r['file_bytes']:.2f}x |"
        )
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    write_results(args.out, markdown, {"benchmark": "model_size", "runs": rows, "machine": machine_info()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
