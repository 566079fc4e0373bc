"""Big manifests read lazily: nothing decoded before training, no row cache, problems recorded as rows are read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

import polyfuse
from polyfuse.config import Config, ConfigError
from polyfuse.data.prepare import LAZY_FIT_ROWS, prepare_data
from polyfuse.errors import DataError

from data_fixtures import BadManifest, build_bad_manifest

pytestmark = pytest.mark.usefixtures("keep_torch_threads")  # conftest.py


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> BadManifest:
    return build_bad_manifest(tmp_path_factory.mktemp("bad"), train_rows=400, valid_rows=100)


def _config(bad: BadManifest, tmp_path: Path, *overrides: str) -> Config:
    return Config.from_yaml(bad.write_config(tmp_path / "config.yaml"), list(overrides))


def _key(entry: dict) -> tuple:
    return entry["split"], entry["row"], entry["column"]


def _read_all(dataset, workers: int) -> int:
    loader = DataLoader(dataset, batch_size=32, num_workers=workers, collate_fn=len)
    return sum(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_lazy_reading_decodes_nothing_up_front_and_reports_what_a_full_scan_reports(bad: BadManifest, tmp_path: Path, workers: int) -> None:
    full = prepare_data(_config(bad, tmp_path, "data.scan=full"), progress=False)
    lazy = prepare_data(_config(bad, tmp_path, "data.scan=lazy"), progress=False)
    assert not lazy.report.entries  # nothing read yet
    assert lazy.config.data.fit_rows == LAZY_FIT_ROWS
    for split, dataset in lazy.datasets.items():
        assert dataset.lazy and not dataset.cache
        assert not dataset._cached
        assert len(dataset) == len(dataset.frame) == len(full.datasets[split])  # missing policy keeps every row
        assert _read_all(dataset, workers) == len(dataset)
        assert _read_all(dataset, workers) == len(dataset)  # read twice: still one entry per problem
        lines = [line for path in dataset._problem_dir.glob("*.jsonl") for line in path.read_text().splitlines()]
        rows = [json.loads(line)["row"] for line in lines]
        assert len(rows) == len(set(rows))  # each bad row written once, not once per epoch or per worker
        dataset.collect_problems()
    assert sorted(lazy.report.entries, key=_key) == sorted(full.report.entries, key=_key)
    assert {_key(e) for e in lazy.report.entries} == bad.expected_keys()
    train = lazy.datasets["train"]
    task = next(iter(lazy.pipeline.labels))
    assert train.task_labels(task).tolist() == full.datasets["train"].task_labels(task).tolist()


def test_auto_reads_lazily_only_over_the_threshold_and_never_with_skip(bad: BadManifest, tmp_path: Path) -> None:
    assert not prepare_data(_config(bad, tmp_path), progress=False).datasets["train"].lazy  # 400 rows < 50,000
    assert prepare_data(_config(bad, tmp_path, "data.lazy_rows=100"), progress=False).datasets["train"].lazy
    assert not prepare_data(_config(bad, tmp_path, "data.lazy_rows=100", "data.missing=skip"), progress=False).datasets["train"].lazy
    with pytest.raises(ConfigError, match="data.scan: lazy reading keeps every row"):
        prepare_data(_config(bad, tmp_path, "data.scan=lazy", "data.missing=skip"), progress=False)
    with pytest.raises(ConfigError, match="data.scan: 'sometimes' is not allowed"):
        prepare_data(_config(bad, tmp_path, "data.scan=sometimes"), progress=False)


def test_error_policy_stops_at_the_first_bad_row_read(bad: BadManifest, tmp_path: Path) -> None:
    lazy = prepare_data(_config(bad, tmp_path, "data.scan=lazy", "data.missing=error"), progress=False)
    first = min(p.row for p in bad.expected if p.split == "train" and p.stage == "input")
    with pytest.raises(DataError, match=f"row {first}"):
        _read_all(lazy.datasets["train"], 0)


def test_a_lazily_read_run_reports_its_broken_rows(bad: BadManifest, tmp_path: Path) -> None:
    polyfuse.fit(_config(bad, tmp_path, "data.scan=lazy", "data.num_workers=2"), out=tmp_path / "run")
    entries = json.loads((tmp_path / "run" / "data_report.json").read_text())["entries"]
    assert {_key(e) for e in entries} == bad.expected_keys()  # every row was read in the first epoch
    assert Config.from_yaml(tmp_path / "run" / "config.yaml").data.fit_rows == LAZY_FIT_ROWS  # what was done is recorded
