"""Inference benchmark: the fair-timing protocol, and `polyfuse bench-infer --json` on a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from polyfuse.cli import app
from polyfuse.deploy.bench import ENGINES, Engine, markdown_table, time_engines

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

runner = CliRunner()


def test_engines_take_turns_and_warmup_is_not_timed() -> None:
    calls: list[tuple[str, int]] = []

    def engine(name: str) -> Engine:
        return Engine(name, lambda batch: calls.append((name, len(batch["row"]))) or {}, 1)

    singles = [{"row": np.arange(1)} for _ in range(2)]
    large = {"row": np.arange(64)}
    engines = [engine("a"), engine("b"), engine("c")]
    timings = time_engines(engines, singles, large, repeats=3, warmup=2)
    warmup = calls[: 3 * 3]
    assert [n for n, _ in warmup] == ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    timed = calls[9:]
    firsts = [timed[i * 6][0] for i in range(3)]  # each repeat: 3 single-row calls, then 3 batch calls
    assert firsts == ["a", "b", "c"]  # the starting engine rotates
    assert [rows for _, rows in timed[:3]] == [1, 1, 1] and [rows for _, rows in timed[3:6]] == [64, 64, 64]
    for t in timings.values():
        assert 0 <= t["latency_p50_ms"] <= t["latency_p95_ms"] and t["throughput_rows_s"] > 0


def test_bench_infer_json_has_every_field(run: Path, tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    result = runner.invoke(
        app, ["bench-infer", str(run), "--json", "--repeats", "3", "--threads", "1", "--out", str(table), "--max-spread", "0",
              "--onnx-dir", str(tmp_path / "onnx")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["rows"] == 96 and report["repeats"] == 3 and report["threads"] == 1
    assert report["throughput_batch"] == 64 and report["latency_batch"] == 1 and report["metric"] == "digit/acc"
    assert set(report["engines"]) == set(ENGINES)
    fields = {"latency_min_ms", "latency_p50_ms", "latency_p95_ms", "latency_mean_ms", "spread", "throughput_rows_s", "bytes",
              "metric", "metrics", "speedup_p50", "speedup_min", "throughput_ratio", "size_ratio", "label"}
    for name, engine in report["engines"].items():
        assert fields <= set(engine), name
        assert 0 < engine["latency_min_ms"] <= engine["latency_p50_ms"] <= engine["latency_p95_ms"]
        assert engine["spread"] >= 1.0
        assert engine["throughput_rows_s"] > 0 and engine["bytes"] > 0
        assert 0.0 <= engine["metric"] <= 1.0
    eager = report["engines"]["eager"]
    assert eager["speedup_p50"] == 1.0 and eager["throughput_ratio"] == 1.0 and eager["size_ratio"] == 1.0
    assert report["engines"]["onnx"]["metric"] == pytest.approx(eager["metric"])
    assert report["engines"]["onnx_int8"]["size_ratio"] < report["engines"]["onnx"]["size_ratio"]
    text = table.read_text()
    assert text == report["markdown"] == markdown_table(report)
    assert sum(line.startswith("| ") for line in text.splitlines()) == 1 + len(ENGINES)  # header + one line per engine
    assert "PyTorch eager (fp32)" in text and "ONNX Runtime dynamic int8" in text
    assert json.loads(table.with_suffix(".json").read_text())["engines"].keys() == report["engines"].keys()
    assert (tmp_path / "onnx" / "model.int8.onnx").is_file()  # --onnx-dir keeps the export for next time
    assert not Path(report["data"]).is_absolute() and not Path(report["checkpoint"]).is_absolute()


def test_a_busy_machine_is_refused_naming_the_engine_and_the_spread() -> None:
    from polyfuse.deploy.bench import BusyMachineError, check_quiet

    quiet = {"eager": {"latency_min_ms": 2.0, "latency_p50_ms": 2.2, "spread": 1.1},
             "onnx": {"latency_min_ms": 0.5, "latency_p50_ms": 0.6, "spread": 1.2}}
    check_quiet(quiet)
    busy = {**quiet, "eager": {"latency_min_ms": 2.3, "latency_p50_ms": 6.2, "spread": 6.2 / 2.3}}
    with pytest.raises(BusyMachineError, match=r"eager median 6.200 ms is 2.70x its minimum 2.300 ms"):
        check_quiet(busy)
    check_quiet(busy, max_spread=3.0)


def test_a_stalled_engine_shows_in_the_spread() -> None:
    import time

    calls = {"n": 0}

    def stalls(batch: dict) -> dict:  # every third call takes 20 ms more: median unaffected, p95 is
        calls["n"] += 1
        time.sleep(0.02 if calls["n"] % 3 == 0 else 0.001)
        return {}

    singles = [{"row": np.arange(1)}]
    timings = time_engines([Engine("a", stalls, 1)], singles, {"row": np.arange(64)}, repeats=30, warmup=1)
    t = timings["a"]
    assert t["latency_min_ms"] < 5 and t["latency_p95_ms"] > 15 and t["latency_min_ms"] <= t["latency_p50_ms"]
