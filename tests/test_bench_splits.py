"""benchmarks/: a table's repeated splits keep its rows and test size, and the summary reports each preset's difference."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_tables import split_summary  # noqa: E402
from tables import resplit  # noqa: E402


def test_a_resplit_keeps_every_row_once_the_test_size_and_the_class_shares() -> None:
    frame = pd.DataFrame({"id": range(100), "y": ["a"] * 70 + ["b"] * 30})
    train, test = frame.iloc[:80], frame.iloc[80:]  # a source split: every "b" row is at the end
    a_train, a_test = resplit(train, test, "y", seed=1)
    b_train, b_test = resplit(train, test, "y", seed=2)
    for tr, te in ((a_train, a_test), (b_train, b_test)):
        assert len(te) == 20 and sorted([*tr["id"], *te["id"]]) == list(range(100))
        assert (te["y"] == "b").sum() == 6  # stratified: 30% of 20
    assert set(a_test["id"]) != set(b_test["id"])
    again, _ = resplit(train, test, "y", seed=1)
    assert list(again["id"]) == list(a_train["id"])  # seeded


def test_the_summary_gives_each_presets_difference_over_the_splits() -> None:
    def entry(seed: int, base: float, medium: float) -> dict:
        return {"table": "t" if seed == 0 else f"t-split{seed}", "source": "t", "split_seed": seed, "task": "classification",
                "baseline": {"acc": base}, "polyfuse": {"medium": {"acc": medium}}}

    lines = split_summary([entry(0, 0.70, 0.72), entry(1, 0.70, 0.66), entry(2, 0.80, 0.80)])
    row = next(line for line in lines if line.startswith("| t |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:4] == ["t", "acc", "medium", "0, 1, 2"]
    mean, sd = cells[4].split(" ± ")
    assert float(mean) == pytest.approx(-0.02 / 3, abs=1e-4) and float(sd) == pytest.approx(0.0306, abs=1e-4)
    assert cells[5] == "+0.0200, -0.0400, +0.0000" and cells[6] == "2 of 3"
    assert split_summary([entry(0, 0.7, 0.7)]) == []  # one split: nothing to summarise


def test_the_before_after_comparison_signs_every_difference_so_that_positive_is_better(tmp_path: Path) -> None:
    import json

    from compare_tables import compare

    def result(table: str, source: str, task: str, metric: str, base: float, value: float) -> dict:
        return {"table": table, "source": source, "task": task, "metric": metric,
                "baseline": {"model": "ridge", metric: base}, "polyfuse": {"medium": {metric: value, "seconds": 1.0}}}

    before = [result("a", "a", "classification", "acc", 0.80, 0.75), result("a-split1", "a", "classification", "acc", 0.70, 0.72),
              result("r", "r", "regression", "rmse", 1.0, 1.2)]
    after = [result("a", "a", "classification", "acc", 0.80, 0.81), result("a-split1", "a", "classification", "acc", 0.70, 0.69),
             result("r", "r", "regression", "rmse", 1.0, 0.9), result("new", "new", "classification", "acc", 0.5, 0.6)]
    for name, rows in (("before", before), ("after", after)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": rows}))
    paired, lines = compare(tmp_path / "before.json", tmp_path / "after.json", "medium")
    got = {p["table"]: (round(p["before_gain"], 4), round(p["after_gain"], 4), round(p["change"], 4)) for p in paired}
    assert got == {"a": (-0.05, 0.01, 0.06), "a-split1": (0.02, -0.01, -0.03), "r": (-0.2, 0.1, 0.3)}  # "new": no before
    summary = [line for line in lines if line.startswith("| a | 2 |")]
    assert summary == ["| a | 2 | -0.0150 | +0.0000 | +0.0150 | 1 / 1 of 2 |"]


def test_two_presets_of_one_run_compare_and_a_preset_file_is_keyed_by_its_stem(tmp_path: Path) -> None:
    import json

    from bench_tables import preset_key
    from compare_tables import compare

    assert preset_key("benchmarks/presets/medium-fused-only.yaml") == "medium-fused-only"
    assert preset_key("medium") == "medium"
    row = {"table": "c", "source": "c", "task": "classification", "metric": "f1", "baseline": {"model": "lr", "f1": 0.85},
           "polyfuse": {"medium-fused-only": {"f1": 0.84, "seconds": 2.0}, "medium": {"f1": 0.86, "seconds": 3.0}}}
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"results": [row]}))
    paired, lines = compare(run, run, "medium-fused-only", "medium")
    assert [(p["before"], p["after"], round(p["change"], 4)) for p in paired] == [(0.84, 0.86, 0.02)]
    assert "medium-fused-only before | medium after" in lines[0]
