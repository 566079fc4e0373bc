"""Serving load benchmark: concurrent clients against ``polyfuse serve`` on 127.0.0.1 with real AV-MNIST rows.

Usage::

    python benchmarks/bench_serve.py                              # trains tiny-avmnist once (runs/bench-serve-tiny)
    python benchmarks/bench_serve.py --clients 8 --requests 25    # a short run
    python benchmarks/bench_serve.py --ckpt runs/av --batch-window-ms 5 --clients 32 --requests 100

The server runs in its own process (``polyfuse serve`` on a free local port), so the client threads do
not share its interpreter. Every client sends ``--requests`` predictions one after another, alternating
multipart uploads and JSON base64, over real test rows (every fourth without its image), after an
untimed warm-up round. Prints a markdown table (status counts, latency p50/p95/p99, requests/s, zero
5xx, labels that differ from ``Predictor.predict`` on the same rows) and writes it with the full JSON
to ``--out`` (default ``benchmarks/results/bench_serve.md`` and ``.json``). Exits 1 on any 5xx or
transport error.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from _common import write_results  # benchmarks/_common.py

HOST = "127.0.0.1"
RECIPE = "tiny-avmnist"


def trained(run: Path) -> Path:
    """The tiny AV-MNIST checkpoint: reused when a complete run exists, trained otherwise."""
    import polyfuse

    if not (run / "COMPLETE").is_file():
        print(f"training {RECIPE} -> {run} (once)", file=sys.stderr)
        polyfuse.fit(RECIPE, out=run, overwrite=True, progress=False)
    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """``polyfuse serve`` in a child process on a free loopback port; stopped on exit."""

    def __init__(self, ckpt: Path, batch_window_ms: float, threads: int | None) -> None:
        self.ckpt, self.batch_window_ms, self.threads = ckpt, batch_window_ms, threads
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"

    def __enter__(self) -> "Server":
        import httpx

        env = dict(os.environ)
        if self.threads is not None:
            env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads))
        self.log = tempfile.TemporaryFile()
        command = [
            sys.executable, "-c", "from polyfuse.cli import main; main()", "serve", str(self.ckpt),
            "--host", HOST, "--port", str(self.port), "--batch-window-ms", str(self.batch_window_ms),
            "--log-level", "warning",
        ]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self._log_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"the server did not answer /health within 180 s:\n{self._log_text()}")

    def _log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def __exit__(self, *_: Any) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.log.close()


def load_rows(n: int) -> tuple[Any, Path]:
    """``n`` real AV-MNIST test rows (every fourth without its image) and the data root."""
    import pandas as pd

    import polyfuse.data  # noqa: F401
    from polyfuse.registry import DATASETS

    avmnist = DATASETS.get("avmnist").factory()
    frame = pd.read_csv(avmnist.test).head(n)[["audio", "image"]].astype(object).reset_index(drop=True)
    frame.loc[frame.index % 4 == 1, "image"] = None
    return frame, Path(avmnist.root)


def request_kwargs(row: Any, root: Path, as_json: bool) -> dict[str, Any]:
    """httpx.post kwargs for one row: JSON base64 or multipart uploads (absent cells are left out)."""
    present = [(column, name) for column, name in (("audio", "a.npy"), ("image", "x.png")) if isinstance(row[column], str)]
    if as_json:
        inputs = {c: {"base64": base64.b64encode((root / row[c]).read_bytes()).decode(), "filename": row[c]} for c, _ in present}
        return {"json": {"inputs": inputs}}
    return {"files": {c: (name, (root / row[c]).read_bytes()) for c, name in present}}


def run_load(url: str, rows: Any, root: Path, clients: int, requests: int, timeout_s: float) -> dict[str, Any]:
    """``clients`` threads x ``requests`` sequential POST /predict each, started together."""
    import httpx

    payloads = [[request_kwargs(rows.iloc[i], root, as_json) for as_json in (False, True)] for i in range(len(rows))]
    start = threading.Barrier(clients + 1)

    def session(client_id: int) -> list[tuple[int, int | str, float, Any]]:
        outcomes = []
        with httpx.Client(base_url=url, timeout=timeout_s) as client:
            client.get("/health")  # connect before the clock starts
            start.wait(timeout=60)
            for j in range(requests):
                i = (client_id * requests + j) % len(rows)
                began = time.perf_counter()
                try:
                    response = client.post("/predict", **payloads[i][(client_id + j) % 2])
                    status: int | str = response.status_code
                    label = response.json()["predictions"]["digit"]["label"] if status == 200 else None
                except httpx.HTTPError as exc:
                    status, label = type(exc).__name__, None
                outcomes.append((i, status, time.perf_counter() - began, label))
        return outcomes

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(session, c) for c in range(clients)]
        start.wait(timeout=60)
        began = time.perf_counter()
        outcomes = [o for f in futures for o in f.result()]
        wall = time.perf_counter() - began
    latencies = np.array([o[2] for o in outcomes]) * 1000
    statuses = Counter(str(o[1]) for o in outcomes)
    return {
        "outcomes": outcomes,
        "wall_s": wall,
        "statuses": dict(sorted(statuses.items())),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
        "requests_per_s": len(outcomes) / wall,
        "server_errors": sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500),
        "transport_errors": sum(n for s, n in statuses.items() if not s.isdigit()),
    }


def markdown_table(report: dict[str, Any]) -> str:
    header = "| clients | requests | status counts | p50 ms | p95 ms | p99 ms | max ms | requests/s | zero 5xx | labels ≠ Predictor |"
    statuses = ", ".join(f"{s}: {n}" for s, n in report["statuses"].items())
    row = (
        f"| {report['clients']} | {report['requests']} | {statuses} | {report['p50_ms']:.1f} | {report['p95_ms']:.1f} "
        f"| {report['p99_ms']:.1f} | {report['max_ms']:.1f} | {report['requests_per_s']:.1f} "
        f"| {'yes' if report['server_errors'] == 0 else 'no'} | {report['label_mismatches']} |"
    )
    return "\n".join([header, "|" + "---|" * 10, row]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=int, default=100, help="requests per client, one after another")
    parser.add_argument("--ckpt", type=Path, default=None, help=f"checkpoint to serve (default: train {RECIPE} once)")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the default run goes (bench-serve-tiny)")
    parser.add_argument("--rows", type=int, default=50, help="real AV-MNIST test rows the requests cycle through")
    parser.add_argument("--batch-window-ms", type=float, default=2.0, help="the server's micro-batching window")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the server (default: torch's)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, seconds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_serve.md")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.rows < 1:
        parser.error("--clients, --requests and --rows must be at least 1")

    import polyfuse
    from polyfuse.errors import PolyfuseError

    try:
        ckpt = args.ckpt or trained(args.runs / "bench-serve-tiny")
        rows, root = load_rows(args.rows)
        expected = polyfuse.load(ckpt).predict(rows, root=root)["digit"].tolist()
        with Server(ckpt, args.batch_window_ms, args.threads) as server:
            import httpx

            run_load(server.url, rows, root, args.clients, 2, args.timeout)  # warm-up (batch shapes), not timed
            load = run_load(server.url, rows, root, args.clients, args.requests, args.timeout)
            metrics = httpx.get(server.url + "/metrics", timeout=args.timeout).text
    except (PolyfuseError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcomes = load.pop("outcomes")
    passes = rows_batched = 0.0
    for line in metrics.splitlines():
        if line.startswith("polyfuse_batch_rows_count "):
            passes = float(line.split()[1])
        elif line.startswith("polyfuse_batch_rows_sum "):
            rows_batched = float(line.split()[1])
    report = {
        "checkpoint": str(ckpt),
        "clients": args.clients,
        "requests": args.clients * args.requests,
        "rows": len(rows),
        "batch_window_ms": args.batch_window_ms,
        "threads": args.threads,
        "label_mismatches": sum(1 for i, status, _, label in outcomes if status == 200 and label != expected[i]),
        "rows_per_forward_pass": rows_batched / passes if passes else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        **load,
    }
    title = (
        f"## Serving: {ckpt} (batch window {args.batch_window_ms:g} ms, {len(rows)} real AV-MNIST rows, "
        f"multipart + JSON; {report['machine']})\n\n"
    )
    markdown = title + markdown_table(report)
    if report["rows_per_forward_pass"]:
        markdown += f"\n{report['rows_per_forward_pass']:.2f} rows per forward pass (warm-up included).\n"
    print(markdown)
    write_results(args.out, markdown, report)
    return 0 if report["server_errors"] == 0 and report["transport_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
