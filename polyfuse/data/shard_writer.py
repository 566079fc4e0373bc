"""write_shards: split, fit and write a config's rows as shards (the format is in ``polyfuse.data.shards``).

Every row is decoded once (in ``workers`` processes, one shard per task) so that its problems
are found and recorded in the data report up front; the raw bytes are what is stored.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from polyfuse.config import Config, ConfigError
from polyfuse.data.dataset import _track
from polyfuse.data.pipeline import DataPipeline, _jsonable
from polyfuse.data.processors.base import RowContext
from polyfuse.data.report import STAGE_INPUT, DataReport, Problem
from polyfuse.data.shards import FILE_KINDS, FORMAT, INDEX, LABELS, VERSION, row_sample
from polyfuse.errors import DataError

DEFAULT_ROWS_PER_SHARD = 2000


@dataclass
class _ShardTask:
    split: str
    number: int
    path: str
    records: list[dict[str, Any]]
    rows: list[int]


@dataclass
class _ShardResult:
    split: str
    number: int
    file: str
    rows: int
    problems: list[tuple[int, list[dict[str, Any]]]]  # (row, problems) of every row with any
    labels: dict[str, list[Any]]  # task -> encoded labels of the written rows, in order
    seconds: float


_WORKER: dict[str, Any] = {}


def _init_worker(pipeline_dir: str, root: str, allow_outside_root: bool, source: str, policy: str, file_columns: list[str]) -> None:
    import torch

    torch.set_num_threads(1)
    _WORKER.update(
        pipeline=DataPipeline.load(pipeline_dir), root=Path(root), allow_outside_root=allow_outside_root,
        source=source, policy=policy, file_columns=file_columns,
    )


def _write_shard(task: _ShardTask) -> _ShardResult:
    """Decode every row of one shard (to find its problems) and write the kept rows' raw samples."""
    import webdataset as wds

    started = time.perf_counter()
    pipeline: DataPipeline = _WORKER["pipeline"]
    problems: list[tuple[int, list[dict[str, Any]]]] = []
    labels: dict[str, list[Any]] = {t: [] for t in pipeline.labels}
    written = 0
    tmp = task.path + ".tmp"
    with open(tmp, "wb") as handle:
        writer = wds.TarWriter(handle, encoder=False, mtime=0.0)
        for record, row in zip(task.records, task.rows):
            ctx = RowContext(
                root=_WORKER["root"], allow_outside_root=_WORKER["allow_outside_root"], source=_WORKER["source"],
                row=row, split=task.split,
            )
            sample = row_sample(record, row, _WORKER["file_columns"], ctx)
            example = pipeline.encode_row(record, ctx)
            if example.problems:
                problems.append((row, [p.to_dict() for p in example.problems]))
                unusable = any(p.stage == STAGE_INPUT for p in example.problems)
                if unusable and _WORKER["policy"] == "error":
                    break  # the main process raises this row's error when it records it
                if unusable and _WORKER["policy"] == "skip":
                    continue
            writer.write(sample)
            written += 1
            for tname, value in example.labels.items():
                labels[tname].append(value)
        writer.close()
    os.replace(tmp, task.path)
    result = _ShardResult(task.split, task.number, os.path.basename(task.path), written, problems, labels, time.perf_counter() - started)
    done = _done_path(task.path)  # written after the tar: a shard with it is complete (resume skips it)
    Path(done + ".tmp").write_text(json.dumps(_jsonable(dataclasses.asdict(result))), encoding="utf-8")
    os.replace(done + ".tmp", done)
    return result


def _done_path(shard: str) -> str:
    return shard[: -len(".tar")] + ".done.json"


def _load_done(task: _ShardTask) -> _ShardResult | None:
    """The result of a shard an interrupted sharding already finished (None when it did not)."""
    done = Path(_done_path(task.path))
    if not done.is_file() or not Path(task.path).is_file():
        return None
    try:
        state = json.loads(done.read_text(encoding="utf-8"))
    except ValueError:
        return None
    state["problems"] = [(int(row), items) for row, items in state["problems"]]
    return _ShardResult(**state)


def write_shards(
    config: Config,
    out: str | Path,
    *,
    workers: int = 1,
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_shard: Callable[[_ShardResult], None] | None = None,
) -> dict[str, Any]:
    """Split, infer, fit (on the training rows) and write every split of ``config.data`` as shards in ``out``.

    Returns a summary: rows and shards per split, rows/s, problems. The data report names the
    manifest, row and column of every problem, as a training run's does. ``resume`` continues an
    interrupted sharding of ``out``: its stored config and pipeline are reused and finished shards kept.
    """
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from polyfuse.data.prepare import prepare_data

    if rows_per_shard < 1:
        raise ConfigError(f"rows_per_shard: must be at least 1, got {rows_per_shard}")
    if workers < 1:
        raise ConfigError(f"workers: must be at least 1, got {workers}")
    out = Path(out)
    if overwrite and resume:
        raise ConfigError("--resume and --overwrite: choose one")
    if (out / INDEX).exists() and not overwrite:
        raise DataError("already holds shards; pass --overwrite to replace them", file=str(out))
    unfinished = out.is_dir() and any(out.glob("*.tar"))
    if unfinished and not (overwrite or resume):
        raise DataError("holds an unfinished sharding; pass --resume to continue it or --overwrite to start again", file=str(out))
    if resume and not ((out / "config.yaml").is_file() and (out / "pipeline").is_dir()):
        raise DataError("nothing to resume (no config.yaml and pipeline/ from an earlier sharding)", file=str(out))
    started = time.perf_counter()
    if resume:  # the interrupted sharding's own config and fitted pipeline: its finished shards used them
        config = Config.from_yaml(out / "config.yaml")
        prepared = prepare_data(config, pipeline=DataPipeline.load(out / "pipeline"), progress=progress, scan=False)
    else:
        prepared = prepare_data(config, progress=progress, scan=False)
    config, pipeline, root = prepared.config, prepared.pipeline, prepared.root
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in [*out.glob("*.tar"), *out.glob("*.done.json")]:
            old.unlink()
        pipeline.save(out / "pipeline")
        config.to_yaml(out / "config.yaml")
    file_columns = [c for n, p in pipeline.processors.items() if pipeline.kinds.get(n) in FILE_KINDS for c in p.columns]
    needed = list(dict.fromkeys([*pipeline.columns, *(enc.column for enc in pipeline.labels.values())]))
    tasks: list[_ShardTask] = []
    for split, dataset in prepared.datasets.items():
        frame = dataset.frame
        order = np.arange(len(frame))
        if split == "train":  # a shuffle buffer then sees rows from all over the table
            order = np.random.default_rng(config.data.split.seed).permutation(len(frame))
        columns = [c for c in needed if c in frame.columns]
        records = frame[columns].iloc[order].to_dict("records")
        rows = [int(r) for r in frame.index[order]]
        for number, start in enumerate(range(0, len(records), rows_per_shard)):
            tasks.append(_ShardTask(
                split, number, str(out / f"{split}-{number:06d}.tar"),
                records[start : start + rows_per_shard], rows[start : start + rows_per_shard],
            ))
    sources = {split: ds.source or "" for split, ds in prepared.datasets.items()}
    report = DataReport()
    init = (str(out / "pipeline"), str(root), config.data.allow_outside_root, "", config.data.missing, file_columns)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    finished = {task.path: done for task in tasks if resume and (done := _load_done(task)) is not None}
    results: list[_ShardResult] = list(finished.values())
    todo = [task for task in tasks if task.path not in finished]
    policy = config.data.missing

    def written(result: _ShardResult) -> None:
        if policy == "error":  # stop at once: the row's DataError names file, row and column
            _finish(result, DataReport(), sources, policy)
        results.append(result)
        if on_shard is not None:
            on_shard(result)

    if workers == 1:
        _init_worker(*init)
        for result in _track(map(_write_shard, todo), progress, "writing shards", len(todo)):
            written(result)
    else:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=init) as pool:
            for result in _track(pool.map(_write_shard, todo), progress, "writing shards", len(todo)):
                written(result)
    order = {split: i for i, split in enumerate(prepared.datasets)}
    results.sort(key=lambda r: (order[r.split], r.number))
    for result in results:  # the report in split and shard order, however the shards were written
        _finish(result, report, sources, policy)
    splits: dict[str, dict[str, Any]] = {}
    labels: dict[str, list[Any]] = {}
    for result in results:
        entry = splits.setdefault(result.split, {"rows": 0, "shards": []})
        entry["rows"] += result.rows
        entry["shards"].append({"file": result.file, "rows": result.rows})
        if result.split == "train":
            for tname, values in result.labels.items():
                labels.setdefault(tname, []).extend(values)
    arrays = {}
    for tname, values in labels.items():
        array = np.asarray(values)
        if array.dtype != object and array.ndim == 1:  # scalar labels (class ids, regression values)
            arrays[tname] = array
    np.savez(out / LABELS, **arrays)
    report.save(out)
    seconds = time.perf_counter() - started
    rows = sum(s["rows"] for s in splits.values())
    index = {
        "format": FORMAT, "version": VERSION, "source": str(config.data.train), "root": str(root),
        "file_columns": file_columns, "splits": splits, "rows_per_shard": rows_per_shard,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = out / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=2), encoding="utf-8")
    tmp.replace(out / INDEX)  # written last: a directory without it was not finished
    return {
        "out": str(out), "rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / max(seconds, 1e-9), 1),
        "workers": workers, "splits": {s: {"rows": v["rows"], "shards": len(v["shards"])} for s, v in splits.items()},
        "problems": report.summary(),
    }


def _finish(result: _ShardResult, report: DataReport, sources: dict[str, str], policy: str) -> None:
    """Record a written shard's problems in the report (the policy decides what ``error`` does)."""
    for row, problems in result.problems:
        items = [Problem(p["stage"], p["column"], p["reason"], p["category"], p.get("name")) for p in problems]
        report.record(items, split=result.split, row=row, file=sources.get(result.split), policy=policy)


__all__ = ["write_shards", "DEFAULT_ROWS_PER_SHARD"]
