"""Inference speed benchmark: eager PyTorch vs ONNX Runtime vs dynamic int8 (PyTorch and ONNX Runtime).

Usage::

    python benchmarks/bench_infer.py                       # trains avmnist-fused once (runs/bench-avmnist-fused)
    python benchmarks/bench_infer.py runs/av --repeats 50  # an existing checkpoint
    python benchmarks/bench_infer.py --recipe tiny-avmnist --threads 1

Prints a markdown table (latency p50/p95 at batch 1, rows/s at batch 64, size, test metric,
ratios vs eager) and writes it with the full JSON to ``--out`` (default
``benchmarks/results/bench_infer.md`` and ``.json``). Timings are model-only, after warm-up,
with the engines interleaved in every repeat; min and median are reported, and the run is
refused (exit 2, nothing written) when a median exceeds its minimum by more than ``--max-spread``:
the machine was busy. See ``polyfuse.deploy.bench``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import write_results  # benchmarks/_common.py


def trained(recipe: str, runs: Path) -> Path:
    """A checkpoint of ``recipe``: reused when a complete run exists, trained otherwise."""
    import polyfuse

    run = runs / f"bench-{recipe}"
    if not (run / "COMPLETE").is_file():
        print(f"training {recipe} -> {run} (once)", file=sys.stderr)
        polyfuse.fit(recipe, out=run, overwrite=True, progress=False)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, help="checkpoint directory (default: train --recipe)")
    parser.add_argument("--recipe", default="avmnist-fused", help="recipe trained when no checkpoint is given")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the recipe's run goes")
    parser.add_argument("--repeats", type=int, default=200, help="timed rounds per engine")
    parser.add_argument("--max-spread", type=float, default=1.5,
                        help="refuse when an engine's median latency exceeds its minimum by more than this factor (0: report anyway)")
    parser.add_argument("--threads", type=int, default=None, help="threads per engine (default: torch's)")
    parser.add_argument("--onnx-dir", type=Path, default=None, help="keep / reuse the ONNX export here")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_infer.md")
    args = parser.parse_args(argv)

    from polyfuse.deploy.bench import benchmark_checkpoint
    from polyfuse.errors import PolyfuseError

    try:
        ckpt = args.checkpoint or trained(args.recipe, args.runs)
        report = benchmark_checkpoint(ckpt, repeats=args.repeats, threads=args.threads, onnx_dir=args.onnx_dir,
                                      max_spread=args.max_spread or None)
    except PolyfuseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    title = f"## Inference: {report['checkpoint']} ({report['metric'] or 'no metric'})\n\n"
    print(title + report["markdown"])
    write_results(args.out, title + report["markdown"], report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
