"""Predictions that would look real but are not: rows without any usable input, a wrong root."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.row_problems import NO_INPUT, PredictionProblemsWarning, problems_summary


def _test_rows(avmnist, n: int = 40) -> pd.DataFrame:
    return pd.read_csv(avmnist.test).head(n)  # file paths relative to the manifest's folder


def test_relative_paths_without_root_get_no_label_and_one_warning(run: Path, avmnist, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a working directory where the relative paths do not exist
    model = polyfuse.load(run)
    rows = _test_rows(avmnist)
    with pytest.warns(PredictionProblemsWarning, match=r"40 of 40 rows \(100%\) have a problem.*root"):
        blind = model.predict(rows)
    assert blind["digit"].isna().all()  # no confident label for a row the model could not see
    assert blind.filter(like="digit:p:").isna().all().all()
    assert blind["problems"].str.contains(NO_INPUT, regex=False).all()

    with warnings.catch_warnings():
        warnings.simplefilter("error", PredictionProblemsWarning)
        seen = model.predict(rows, root=Path(avmnist.test).parent)
    assert seen["digit"].notna().all() and (seen["problems"] == "").all()


def test_one_missing_input_still_predicts_and_the_cli_warns(run: Path, avmnist, tmp_path) -> None:
    rows = _test_rows(avmnist, 20)
    rows.loc[:9, "audio"] = None  # half the rows have no sound (missing data, not a problem): the image predicts them
    model = polyfuse.load(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PredictionProblemsWarning)
        got = model.predict(rows, root=Path(avmnist.test).parent)
    assert got["digit"].notna().all() and got["problems"].str.contains("empty value").sum() == 10
    manifest = tmp_path / "rows.csv"
    _test_rows(avmnist, 20).to_csv(manifest, index=False)  # the CSV sits where the files are not
    result = CliRunner().invoke(app, ["predict", str(run), "--data", str(manifest), "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    assert "warning: 20 of 20 rows (100%) have a problem" in result.output


def test_a_few_problems_stay_quiet() -> None:
    frame = pd.DataFrame({"problems": [""] * 99 + ["image: unreadable"]})
    assert problems_summary(frame) is None
    frame = pd.DataFrame({"problems": [""] * 90 + ["image: unreadable"] * 10})
    assert problems_summary(frame).startswith("10 of 100 rows (10%) have a problem, e.g. image: unreadable")


def test_the_onnx_predictor_gives_no_label_from_nothing_either(run: Path, avmnist, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    from polyfuse.deploy.export import export_checkpoint
    from polyfuse.deploy.onnx_predictor import OnnxPredictor

    export_checkpoint(run, tmp_path / "onnx")
    monkeypatch.chdir(tmp_path)
    onnx = OnnxPredictor(tmp_path / "onnx")
    rows = _test_rows(avmnist, 12)
    with pytest.warns(PredictionProblemsWarning, match="12 of 12 rows"):
        blind = onnx.predict(rows)
    assert blind["digit"].isna().all() and blind["problems"].str.contains(NO_INPUT, regex=False).all()
    seen = onnx.predict(rows, root=Path(avmnist.test).parent)
    assert seen["digit"].notna().all()
    torch_labels = polyfuse.load(run).predict(rows, root=Path(avmnist.test).parent)["digit"]
    assert list(seen["digit"].astype(str)) == list(torch_labels.astype(str))
