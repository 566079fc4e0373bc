"""`polyfuse data inspect` through the real CLI app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from polyfuse.cli import app
from polyfuse.data.inspect import inspect_manifest

runner = CliRunner()


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    """8 rows: image + audio + text + numbers; row 2 names a missing image, row 5 a corrupt WAV, row 6 has no label."""
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = []
    for i in range(8):
        Image.new("L", (10, 10), i * 30).save(data / "img" / f"{i}.png")
        sf.write(data / f"{i}.wav", np.zeros(160, dtype=np.float32) + 0.01 * i, 16000)
        rows.append({"image": f"img/{i}.png", "sound": f"{i}.wav", "caption": f"a grey square number {i} on a page",
                     "size": 1.5 * i, "digit": str(i % 3)})
    rows[2]["image"] = "img/gone.png"
    (data / "5.wav").write_bytes((data / "5.wav").read_bytes()[:20])
    rows[6]["digit"] = ""
    path = data / "rows.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_inspect_text_output_reports_problem_rows(manifest: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(manifest), "--label", "digit"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("8 rows, 5 columns", "image", "audio", "text", "label digit", "problems (3, in 2 rows)",
                     "img/gone.png", "file not found", "cannot decode audio", "1 row without a label (rows 6)"):
        assert expected in out, expected
    problem_lines = [line for line in out.splitlines() if "gone.png" in line or "5.wav" in line]
    assert any(line.lstrip("│ ").startswith("2 ") for line in problem_lines)  # row numbers are shown
    assert any(line.lstrip("│ ").startswith("5 ") for line in problem_lines)


def test_inspect_json_is_pure_json(manifest: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(manifest), "-l", "digit", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 8 and data["format"] == "csv"
    assert {c["name"]: c["role"] for c in data["columns"]} == {
        "image": "image", "sound": "audio", "caption": "text", "size": "numeric", "digit": "label"
    }
    assert data["labels"]["digit"]["classes"] == {"1": 3, "0": 2, "2": 2} and data["labels"]["digit"]["missing"] == 1
    rows = {(p["row"], p["column"]) for p in data["problems"]}
    assert rows == {(None, "digit"), (2, "image"), (5, "sound")}
    assert data["inputs"]["tabular"] == {"kind": "tabular", "numeric": ["size"], "categorical": []}
    assert data == inspect_manifest(manifest, labels=["digit"])  # the CLI prints exactly the library result


def test_inspect_root_and_outside_paths(manifest: Path, tmp_path: Path) -> None:
    other_root = tmp_path / "data" / "sub"
    other_root.mkdir()
    frame = pd.read_csv(manifest)
    frame["image"] = "../" + frame["image"]  # ../img/0.png from data/sub: outside that root
    moved = tmp_path / "moved.csv"
    frame.to_csv(moved, index=False)
    result = runner.invoke(app, ["data", "inspect", str(moved), "--root", str(other_root), "--json"])
    data = json.loads(result.stdout)
    reasons = [p["reason"] for p in data["problems"] if p["column"] == "image"]
    assert len(reasons) == 8 and all("escapes the data root" in r for r in reasons)
    result = runner.invoke(app, ["data", "inspect", str(moved), "--root", str(other_root), "--allow-outside-root", "--json"])
    data = json.loads(result.stdout)
    assert [p["row"] for p in data["problems"] if p["column"] == "image"] == [2]  # only the missing file is left


def test_inspect_strict_and_bad_input(manifest: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "inspect", str(manifest), "--strict", "--json"])
    assert result.exit_code == 1
    result = runner.invoke(app, ["data", "inspect", str(manifest), "--label", "nope"])
    assert result.exit_code == 2
    assert "missing required column 'nope'" in result.output and "Traceback" not in result.output
    (tmp_path / "semi.csv").write_text("a;b\n1;2\n")
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "semi.csv")])
    assert result.exit_code == 2 and "semicolon-separated" in result.output
    result = runner.invoke(app, ["data", "inspect", str(tmp_path / "none.csv")])
    assert result.exit_code == 2 and "manifest file not found" in result.output
