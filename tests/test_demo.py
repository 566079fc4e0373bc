"""`polyfuse demo` end to end on a small slice of AV-MNIST: three runs, comparison, reload, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyfuse.cli import app


def test_demo_trains_three_models_and_reloads_the_fused_one(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--no-progress", "data.max_rows=160", "data.batch_size=16", "train.epochs=8",
              "model.dim=16", "train.threads=1"],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"audio", "image", "fused", "details", "total_seconds"}
    for key in ("audio", "image", "fused"):
        assert metrics[key] > 0.2, (key, metrics[key])  # 10 digits: chance is 0.1 (measured 0.29 / 0.66 / 0.71)
        assert metrics[key] == metrics["details"][key]["test"]["digit"]["acc"]
        assert (out / key / "COMPLETE").is_file() and (out / key / "report.md").is_file()
    assert metrics["details"]["audio"]["parameters"] < metrics["details"]["fused"]["parameters"]
    import polyfuse

    reloaded = polyfuse.load(out / "fused").evaluate()["metrics"]["digit"]["acc"]
    assert reloaded == pytest.approx(metrics["fused"], abs=1e-6)  # the figure is the saved model's, on its test rows
    report = (out / "report.md").read_text()
    assert "| fused (`avmnist-fused`) |" in report and "without audio" in report
    assert "Reloaded fused model" in report and report.count("\n| ") >= 3 + 2 + 8
    assert "which modality matters" in res.output
