"""End to end over real broken files: a run finishes, and the data report lists exactly the broken rows.

The manifest (tests/data_fixtures.py) holds 1400 real AV-MNIST rows with a synthesized voice WAV,
text and tabular columns; 14 rows (1%) are broken, each in its own way, and 5 more are unusual
but valid (another sample rate, stereo, RGBA, very long text, odd Unicode).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import polyfuse
from polyfuse.cli import app
from polyfuse.config import Config
from polyfuse.data.prepare import prepare_data
from polyfuse.data.report import ACTION_IMPUTED, ACTION_LABEL, ACTION_MISSING, ACTION_SKIPPED
from polyfuse.errors import DataError
from data_fixtures import BREAKAGES, UNUSUAL, BadManifest, build_bad_manifest, write_manifest_errors

runner = CliRunner()
ACTIONS = {"input": ACTION_MISSING, "imputed": ACTION_IMPUTED, "label": ACTION_LABEL}


pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest.py


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> BadManifest:
    return build_bad_manifest(tmp_path_factory.mktemp("bad"))


@pytest.fixture(scope="module")
def trained(bad: BadManifest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`polyfuse train config.yaml --out DIR` over the broken manifests (tiny model, 1 epoch)."""
    work = tmp_path_factory.mktemp("run")
    config = bad.write_config(work / "config.yaml")
    out = work / "out"
    result = runner.invoke(app, ["train", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _manifest(bad: BadManifest, split: str) -> str:
    return str(bad.train if split == "train" else bad.valid)


def test_the_fixture_plants_one_problem_of_each_kind_in_about_one_percent_of_rows(bad: BadManifest) -> None:
    assert [p.kind for p in bad.expected] == [kind for kind, *_ in BREAKAGES]
    assert len({(p.split, p.row) for p in bad.expected}) == len(bad.expected)  # one problem per row
    rows = sum(1 for _ in open(bad.train)) + sum(1 for _ in open(bad.valid)) - 2
    assert 0.005 <= len(bad.expected) / rows <= 0.02
    outside = bad.root.parent / "outside" / "secret.png"
    link = next(p.file for p in bad.expected if p.kind == "symlink out of root")
    assert outside.is_file() and (bad.root / link).is_symlink()


def test_train_finishes_and_the_report_lists_exactly_the_broken_rows(bad: BadManifest, trained: Path) -> None:
    assert (trained / "COMPLETE").is_file()
    report = json.loads((trained / "data_report.json").read_text())
    entries = report["entries"]
    found = {(e["split"], e["row"], e["column"]) for e in entries}
    assert found == bad.expected_keys(), f"extra: {found - bad.expected_keys()}, missing: {bad.expected_keys() - found}"
    assert len(entries) == len(bad.expected)  # one entry each, nothing more
    by_key = {(e["split"], e["row"], e["column"]): e for e in entries}
    for problem in bad.expected:
        entry = by_key[(problem.split, problem.row, problem.column)]
        assert entry["file"] == _manifest(bad, problem.split), problem.kind
        assert problem.reason in entry["reason"], (problem.kind, entry["reason"])
        if problem.file is not None:  # the referenced file is named too
            assert problem.file in entry["reason"], (problem.kind, entry["reason"])
        assert entry["action"] == ACTIONS[problem.stage], problem.kind
    unusual = {key for rows in bad.unusual.values() for key in rows}
    assert not unusual & {(e["split"], e["row"]) for e in entries}, "valid but unusual rows were reported"
    assert len(unusual) == len(UNUSUAL)
    metrics = json.loads((trained / "metrics.json").read_text())
    # an empty cell is missing data, counted apart; every other planted breakage is a problem
    blanks = [p for p in bad.expected if p.reason == "empty value"]
    assert blanks and metrics["data_report"]["total"] == len(bad.expected) - len(blanks)
    assert sum(metrics["data_report"]["missing"].values()) == len(blanks)
    assert metrics["valid"]["rows"] == sum(1 for _ in open(bad.valid)) - 1  # "missing" keeps every row


def test_the_trained_model_predicts_every_row_and_flags_only_the_broken_ones(bad: BadManifest, trained: Path) -> None:
    model = polyfuse.load(trained)
    frame = model.predict(bad.valid, root=bad.root)
    assert len(frame) == sum(1 for _ in open(bad.valid)) - 1
    assert frame["digit"].notna().all()  # a broken modality is treated as missing, the row still gets a prediction
    flagged = set(frame.index[frame["problems"] != ""])
    expected = {p.row for p in bad.expected if p.split == "valid"}  # the unseen label is named too
    assert flagged == expected


def test_error_policy_stops_at_the_first_broken_row_naming_file_row_and_column(bad: BadManifest, tmp_path: Path) -> None:
    config = bad.write_config(tmp_path / "config.yaml")
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "out"), "data.missing=error"])
    assert result.exit_code == 2, result.output
    first = bad.first_input_problem()
    message = result.output
    for part in (str(bad.train), f"row {first.row}", f"column {first.column!r}", first.reason, first.file or ""):
        assert part in message, (part, message)
    assert "Traceback" not in message
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_skip_policy_drops_the_unusable_rows_and_reports_them(bad: BadManifest) -> None:
    config = Config.from_dict(bad.config(data={**bad.config()["data"], "missing": "skip"}))
    prepared = prepare_data(config, progress=False)
    for split in ("train", "valid"):
        rows = set(prepared.datasets[split].rows)
        total = sum(1 for _ in open(_manifest(bad, split))) - 1
        dropped = {p.row for p in bad.expected if p.split == split and p.stage == "input"}
        kept = {p.row for p in bad.expected if p.split == split and p.stage != "input"}
        assert not rows & dropped and kept <= rows
        assert len(rows) == total - len(dropped)
    skipped = {(e["split"], e["row"], e["column"]) for e in prepared.report.entries if e["action"] == ACTION_SKIPPED}
    assert skipped == bad.expected_keys(("input",))
    others = {(e["split"], e["row"], e["column"]) for e in prepared.report.entries if e["action"] != ACTION_SKIPPED}
    assert others == bad.expected_keys(("imputed", "label"))
    # the unusual rows are kept and read: resampled / mixed to mono, RGBA flattened, text truncated
    shapes = {"wav at 22050 Hz": ("voice", "waveform", (2000,)), "stereo wav": ("voice", "waveform", (2000,)),
              "rgba png": ("image", "pixels", (1, 28, 28)), "very long text": ("text", "input_ids", (24,))}
    for kind, [(split, row)] in bad.unusual.items():
        dataset = prepared.datasets[split]
        example = dataset[dataset.rows.index(row)]
        if kind in shapes:
            name, key, shape = shapes[kind]
            array = example.inputs[name][key]
            if split == "train" and name == "voice":  # training rows keep their length until augmentation
                assert abs(len(array) - 2000) <= 1
            else:
                assert array.shape == shape, kind
        else:
            assert example.inputs["text"]["input_ids"].size > 2, kind  # more than [CLS] [SEP]


@pytest.fixture(scope="module")
def manifest_errors(bad: BadManifest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_manifest_errors(tmp_path_factory.mktemp("errors"), bad)


@pytest.mark.parametrize("kind", ["missing column", "missing column in valid", "wrong delimiter", "duplicated column"])
def test_manifest_errors_stop_with_a_clear_message_naming_file_and_column(
    kind: str, bad: BadManifest, manifest_errors: dict, tmp_path: Path
) -> None:
    case = manifest_errors[kind]
    config = bad.write_config(tmp_path / "config.yaml")
    overrides = [f"data.train={case.train}", f"data.valid={case.valid}"]
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "out"), *overrides])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(case.file) in result.output and repr(case.column) in result.output, result.output
    assert case.message in result.output, result.output
    with pytest.raises(DataError) as raised:  # the same through the API, as a DataError naming the file
        prepare_data(Config.from_yaml(config, overrides), progress=False)
    assert raised.value.file == str(case.file)
