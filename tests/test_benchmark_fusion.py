"""`polyfuse benchmark fusion`: variants, seeds, robustness table, reuse of finished runs, CLI on a user table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from polyfuse.benchmark.fusion import plan_variants, resolve_fusions, run_fusion_benchmark
from polyfuse.benchmark.report import markdown, ranked, write_leaderboard
from polyfuse.cli import app
from polyfuse.config import Config
from polyfuse.errors import PolyfuseError
from polyfuse.recipes import load_recipe

runner = CliRunner()


def test_variants_are_baselines_then_each_fusion_with_and_without_modality_dropout() -> None:
    variants = plan_variants(["audio", "image"], ["concat", "gated"], modality_dropout=0.3)
    assert [v.key for v in variants] == ["audio only", "image only", "concat", "concat+md", "gated", "gated+md"]
    assert "data.use=[audio]" in variants[0].overrides
    assert "model.fusion={name: gated}" in variants[4].overrides and "data.augment.modality_dropout=0.0" in variants[4].overrides
    assert "data.augment.modality_dropout=0.3" in variants[5].overrides and variants[5].modality_dropout == 0.3
    assert [v.key for v in plan_variants(["text"], ["sum"])] == ["sum"]  # one input: no baseline to compare


def test_unknown_fusion_names_list_the_allowed_ones() -> None:
    assert "fit" in resolve_fusions("all") and len(resolve_fusions("all")) >= 12
    with pytest.raises(PolyfuseError, match=r"gatd not registered; allowed: all, .*gated"):
        resolve_fusions("concat,gatd")


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    config = load_recipe("tiny-avmnist").with_overrides(["train.epochs=2"])
    result = run_fusion_benchmark(config, out, fusions=["gated"], seeds=2, modality_dropout=0.3, progress=False)
    return result, out


def test_every_variant_trains_for_every_seed_on_real_rows(board: tuple[dict, Path]) -> None:
    result, out = board
    assert result["inputs"] == ["audio", "image"] and result["task"] == "digit" and result["metric"] == "acc"
    rows = {r["key"]: r for r in result["variants"]}
    assert set(rows) == {"audio only", "image only", "gated", "gated+md"}
    for row in rows.values():
        assert row["seeds"] == 2 and len(row["runs"]) == 2
        tests = [r["test"] for r in row["runs"]]
        for run in row["runs"]:  # the leaderboard reports what each run measured on its test split
            measured = json.loads((Path(run["run"]) / "metrics.json").read_text())["test"]["digit"]["acc"]
            assert run["test"] == pytest.approx(measured)
        assert row["test_mean"] == pytest.approx(sum(tests) / 2)
        assert row["parameters"] > 0 and row["latency_ms"] > 0
        assert len({r["run"] for r in row["runs"]}) == 2  # one run directory per seed
    # seeds differ, so the two runs of a variant are two different models
    seeds = {Config.from_yaml(Path(r["run"]) / "config.yaml").train.seed for r in rows["gated"]["runs"]}
    assert len(seeds) == 2
    # fused models are evaluated with each input removed; unimodal baselines only have their own input
    assert set(rows["gated+md"]["without"]) == {"audio", "image"}
    assert rows["audio only"]["parameters"] < rows["gated"]["parameters"] == rows["gated+md"]["parameters"]


def test_leaderboard_files_rank_and_show_robustness(board: tuple[dict, Path]) -> None:
    result, out = board
    paths = write_leaderboard(result, out, command="polyfuse benchmark fusion --recipe tiny-avmnist")
    text = paths["md"].read_text()
    order = [r["key"] for r in ranked(result)]
    means = [r["test_mean"] for r in ranked(result)]
    assert means == sorted(means, reverse=True)
    first_row = next(line for line in text.splitlines() if line.startswith("| 1 |"))
    assert f"| {order[0]} |" in first_row
    assert "## Robustness" in text and "| gated+md |" in text and "without audio" in text
    assert paths["png"].stat().st_size > 5000 and paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())["variants"][0]["key"] == "audio only"


def test_a_rerun_reuses_finished_runs(board: tuple[dict, Path]) -> None:
    result, out = board
    weights = Path(result["variants"][2]["runs"][0]["run"]) / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    config = load_recipe("tiny-avmnist").with_overrides(["train.epochs=2"])
    again = run_fusion_benchmark(config, out, fusions=["gated"], seeds=1, latency=False, progress=False)
    assert weights.stat().st_mtime_ns == stamp
    assert again["variants"][2]["test_mean"] == result["variants"][2]["runs"][0]["test"]


def test_cli_on_a_user_table(tmp_path: Path, avmnist) -> None:  # noqa: ANN001 - the avmnist fixture
    rows = pd.read_csv(avmnist.train).head(120)
    rows["audio"] = [str(avmnist.root / p) for p in rows["audio"]]
    rows["image"] = [str(avmnist.root / p) for p in rows["image"]]
    table = tmp_path / "mine.csv"
    rows.drop(columns=["id"]).to_csv(table, index=False)
    out = tmp_path / "bench"
    res = runner.invoke(app, [
        "benchmark", "fusion", "--data", str(table), "--label", "label", "--fusions", "sum,product", "--seeds", "1",
        "--no-latency", "--out", str(out), "--json", "data.allow_outside_root=true", "train.epochs=1", "model.dim=16",
    ])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    # the medium preset's inputs: the series column read twice (random-convolution and summary features)
    assert [v["key"] for v in data["variants"]] == ["audio_rocket only", "audio_summary only", "image only", "sum", "product"]
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.png").is_file()
    assert "| product |" in markdown(data)


def test_cli_errors_are_one_line() -> None:
    res = runner.invoke(app, ["benchmark", "fusion", "--dataset", "avmnist", "--fusions", "nope"])
    assert res.exit_code == 2 and "nope not registered" in res.output
    res = runner.invoke(app, ["benchmark", "fusion", "--dataset", "no-such-set"])
    assert res.exit_code == 2 and "not a built-in dataset" in res.output
    res = runner.invoke(app, ["benchmark", "fusion"])
    assert res.exit_code == 2 and "exactly one of" in res.output
