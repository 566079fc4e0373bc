"""prepare_data: config -> fitted pipeline + one MultimodalDataset per split + the data report.

Resolution order:

1. ``data.dataset``: the built-in dataset's ``prepare()`` gives manifests, root, inputs
   and tasks; the config's own values win where it sets them.
2. Otherwise ``data.train`` (+ optional ``data.valid`` / ``data.test``) manifests; file
   paths resolve against ``data.root`` or the manifest's folder.
3. Splits not given as files are carved from train with ``data.split`` (seeded,
   stratified by the first classification task unless told otherwise, group-aware).
4. Empty ``data.inputs`` are inferred from the training manifest (task columns and the
   split group column excluded).
5. The pipeline is fitted on the training rows only, unless one is given (a saved model
   evaluating new data reuses its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from polyfuse.config import Config, ConfigError, InputConfig
from polyfuse.data.dataset import MultimodalDataset
from polyfuse.data.pipeline import DataPipeline
from polyfuse.data.report import DataReport, check_policy
from polyfuse.errors import DataError
from polyfuse.tasks import TASKS

SPLITS = ("train", "valid", "test")


@dataclass
class PreparedData:
    config: Config  # a copy with data.inputs and tasks filled in
    pipeline: DataPipeline
    datasets: dict[str, Any]  # the splits that exist: MultimodalDataset, or ShardStream from shards
    report: DataReport
    root: Path


@dataclass
class _Table:
    """Rows of one split and the file they come from (row numbers = ``frame.index``)."""

    frame: pd.DataFrame
    source: str


def _builtin(config: Config) -> tuple[Config, dict[str, str | None], Path]:
    """Fill manifests, root, inputs and tasks from the built-in dataset ``data.dataset``."""
    import polyfuse.data  # noqa: F401  (registers the datasets)
    from polyfuse.registry import DATASETS, RegistryError

    name = config.data.dataset
    assert name is not None
    try:
        entry = DATASETS.get(name)
    except RegistryError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None
    prepared = entry.factory(**dict(config.data.dataset_options))
    raw = config.to_dict()
    if not raw["data"]["inputs"]:
        raw["data"]["inputs"] = dict(prepared.inputs)
    if not raw["tasks"] and not raw["objectives"]:  # objectives without tasks = pretraining: no labels
        raw["tasks"] = dict(prepared.tasks)
    config = Config.from_dict(raw)
    files = {
        "train": str(prepared.train),
        "valid": str(prepared.valid) if prepared.valid else None,
        "test": str(prepared.test) if prepared.test else None,
    }
    root = Path(config.data.root) if config.data.root else Path(prepared.root)
    return config, files, root


def _read_tables(config: Config, files: dict[str, str | None], needed: Sequence[str]) -> dict[str, _Table]:
    """Read the manifests and carve the missing splits out of train."""
    from polyfuse.data.manifest import read_manifest
    from polyfuse.data.splits import split_frame

    train_file = files["train"]
    assert train_file is not None
    tables = {"train": _Table(read_manifest(train_file), train_file)}
    for split in ("valid", "test"):
        if files[split]:
            tables[split] = _Table(read_manifest(files[split]), str(files[split]))
    carve = [s for s in ("valid", "test") if s not in tables]
    fractions = {s: getattr(config.data.split, s) if s in carve else 0.0 for s in ("valid", "test")}
    if carve and any(fractions.values()):
        train = tables["train"].frame
        stratify = _stratify_column(config, train)
        group = config.data.split.group
        if group is not None and group not in train.columns:
            raise DataError(
                f"data.split.group: column {group!r} not in the manifest; columns present: {', '.join(map(str, train.columns))}",
                file=train_file,
            )
        parts = split_frame(
            train, valid=fractions["valid"], test=fractions["test"], seed=config.data.split.seed,
            stratify=stratify, group=group,
        )
        tables["train"] = _Table(train.iloc[parts["train"]], train_file)
        for split in carve:
            if len(parts[split]):
                tables[split] = _Table(train.iloc[parts[split]], train_file)
    if config.data.max_rows is not None:
        tables = {s: _Table(t.frame.iloc[: config.data.max_rows], t.source) for s, t in tables.items()}
    if config.data.max_train_rows is not None:  # few labelled rows for fine-tuning; valid/test stay whole
        tables["train"] = _Table(tables["train"].frame.iloc[: config.data.max_train_rows], tables["train"].source)
    return {s: t for s, t in tables.items() if s in needed or s == "train"}


def split_rows(config: Config) -> dict[str, pd.DataFrame]:
    """The rows of each split of a manifest-based config, cut exactly as ``prepare_data`` cuts them."""
    if not config.data.train:
        raise ConfigError("split_rows: data.train (a manifest file) is needed")
    files = {"train": config.data.train, "valid": config.data.valid, "test": config.data.test}
    return {split: table.frame for split, table in _read_tables(config, files, SPLITS).items()}


def _stratify_column(config: Config, train: pd.DataFrame) -> str | None:
    stratify = config.data.split.stratify
    if stratify == "auto":
        return next((t.column for t in config.tasks.values() if TASKS[t.type].single_label and t.column in train.columns), None)
    if stratify is not None and stratify not in train.columns:
        raise ConfigError(
            f"data.split.stratify: column {stratify!r} not in the manifest; allowed: auto, null, "
            f"or one of {', '.join(map(str, train.columns))}"
        )
    return stratify


def _check_task_columns(config: Config, tables: dict[str, _Table], reuse: bool) -> None:
    """Every task column must exist in every split table (a valid/test manifest without it is a mistake)."""
    for _, table in tables.items():
        absent = [t.column for t in config.tasks.values() if t.column not in table.frame.columns]
        if absent:
            raise DataError(
                f"task label column(s) {', '.join(map(repr, absent))} not in the manifest; "
                f"columns present: {', '.join(map(str, table.frame.columns))}",
                file=table.source,
            )


def _check_input_columns(config: Config, pipeline: DataPipeline | None, tables: dict[str, _Table]) -> None:
    """Every column the inputs read must exist in every table (else its rows would silently lack that input).

    Checked before fitting, so that a bad validation manifest stops the run at once.
    """
    from polyfuse.data.pipeline import build_processor

    if pipeline is not None:
        needed = {c: name for name, proc in pipeline.processors.items() for c in proc.columns}
    else:
        needed = {c: name for name, inp in config.data.inputs.items() for c in build_processor(name, inp).columns}
    for table in tables.values():
        absent = [c for c in needed if c not in table.frame.columns]
        if absent:
            raise DataError(
                f"column(s) {', '.join(f'{c!r} (input {needed[c]!r})' for c in absent)} not in the manifest; "
                f"columns present: {', '.join(map(str, table.frame.columns))}",
                file=table.source,
            )


def _infer_inputs(config: Config, train: _Table, root: Path) -> dict[str, InputConfig]:
    from polyfuse.data.schema import infer_schema

    excluded = [t.column for t in config.tasks.values()]
    if config.data.split.group:
        excluded.append(config.data.split.group)
    schema = infer_schema(
        train.frame, root, labels=[c for c in excluded if c in train.frame.columns],
        allow_outside_root=config.data.allow_outside_root,
    )
    inputs = {}
    for name, entry in schema.inputs().items():
        entry = dict(entry)
        if entry.get("kind") == "tabular":
            for key in ("numeric", "categorical"):
                entry[key] = [c for c in entry.get(key, []) if c not in excluded]
            if not entry.get("numeric") and not entry.get("categorical"):
                continue
        elif entry.get("column") in excluded:
            continue
        inputs[name] = InputConfig.parse(entry, f"data.inputs.{name}")
    if not inputs:
        raise DataError(
            "no input columns found (every column is a label, an id, or ignored); set data.inputs in the config",
            file=train.source,
        )
    return inputs


def _select_inputs(config: Config) -> None:
    """Keep only the inputs named in ``data.use`` (unimodal baselines, ablations)."""
    use = config.data.use
    if not use:
        return
    unknown = [name for name in use if name not in config.data.inputs]
    if unknown:
        raise ConfigError(
            f"data.use: {unknown[0]!r} is not an input; inputs: {', '.join(config.data.inputs)}"
        )
    config.data.inputs = {name: config.data.inputs[name] for name in use}
    config.model.encoders = {k: v for k, v in config.model.encoders.items() if k in use}


def _pretrained_statistics(config: Config) -> None:
    """Image/video inputs read by a pretrained encoder use its normalization unless the config sets one."""
    from polyfuse.registry import ENCODERS

    for name, inp in config.data.inputs.items():
        comp = config.model.encoders.get(name)
        if inp.kind not in ("image", "video") or comp is None or comp.name not in ENCODERS:
            continue
        meta = ENCODERS.get(comp.name).metadata
        mean, std = meta.get("image_mean"), meta.get("image_std")
        if mean is None or std is None or inp.options.get("mean") is not None or inp.options.get("std") is not None:
            continue
        inp.options["mean"], inp.options["std"] = [float(v) for v in mean], [float(v) for v in std]
        if inp.options.get("channels") == 1:  # grayscale, repeated to RGB by the encoder: one averaged value
            inp.options["mean"] = [sum(inp.options["mean"]) / len(mean)]
            inp.options["std"] = [sum(inp.options["std"]) / len(std)]
        if inp.options.get("channels") is None:
            inp.options["channels"] = len(mean)


LAZY_FIT_ROWS = 10_000  # training rows the pipeline is fitted on when rows are read lazily (data.fit_rows unset)


def _reads_lazily(config: Config, train_rows: int) -> bool:
    """``data.scan``: lazy, or auto over ``data.lazy_rows`` training rows; lazy reading cannot honour ``skip``."""
    scan, policy = config.data.scan, config.data.missing
    if scan not in ("auto", "full", "lazy"):
        raise ConfigError(f"data.scan: {scan!r} is not allowed; allowed: auto, full, lazy")
    if scan == "lazy" and policy == "skip":
        raise ConfigError(
            "data.scan: lazy reading keeps every row (a row is read only when trained on), so data.missing: skip "
            "cannot drop rows up front; use data.missing: missing or error, or data.scan: full"
        )
    return scan == "lazy" or (scan == "auto" and policy != "skip" and train_rows > config.data.lazy_rows)


def _from_shards(config: Config, pipeline: DataPipeline | None, splits: Sequence[str]) -> PreparedData:
    """The splits of a shard directory as streams; inputs, tasks and the fitted pipeline come with the shards."""
    from polyfuse.data.shards import ShardIndex, shard_dir
    from polyfuse.data.stream import ShardStream

    assert config.data.train is not None
    directory = shard_dir(config.data.train)
    for key in ("valid", "test", "dataset"):
        if getattr(config.data, key):
            raise ConfigError(f"data.{key}: not used with data.train: shards://... (the shards hold their own splits)")
    stored = Config.from_yaml(directory / "config.yaml")
    if not config.data.inputs:
        config.data.inputs = dict(stored.data.inputs)
    if not config.tasks and not config.objectives:
        config.tasks = dict(stored.tasks)
    if pipeline is None:
        pipeline = DataPipeline.load(directory / "pipeline")
    absent = [t for t in config.tasks if t not in pipeline.labels]
    if absent:
        raise ConfigError(f"tasks.{absent[0]}: not a task of these shards; tasks: {', '.join(pipeline.labels) or '(none)'}")
    _select_inputs(config)
    if config.data.use:
        pipeline = DataPipeline(
            {n: pipeline.processors[n] for n in config.data.use},
            {t: pipeline.labels[t] for t in config.tasks if t in pipeline.labels},
            {n: pipeline.kinds[n] for n in config.data.use},
        )
    index = ShardIndex.load(directory)
    datasets: dict[str, Any] = {}
    for split in splits:
        if not index.rows(split):
            continue
        train = split == "train"
        limit = config.data.max_rows
        if train and config.data.max_train_rows is not None:
            limit = min(limit or config.data.max_train_rows, config.data.max_train_rows)
        datasets[split] = ShardStream(
            directory, pipeline, split=split, shuffle=train,
            batch_size=config.data.batch_size if train else (config.data.eval_batch_size or config.data.batch_size),
            seed=config.train.seed, buffer=config.data.shuffle_buffer,
            augment=config.data.augment if train else None, limit=limit,
        )
    report = DataReport.load(directory) if (directory / "data_report.json").is_file() else DataReport()
    return PreparedData(config=config, pipeline=pipeline, datasets=datasets, report=report, root=directory)


def prepare_data(
    config: Config,
    *,
    pipeline: DataPipeline | None = None,
    splits: Sequence[str] = SPLITS,
    progress: bool = True,
    scan: bool = True,
) -> PreparedData:
    """Read, split, infer, fit and scan: everything the trainer needs from ``config.data``.

    ``scan=False`` leaves the datasets unread (the shard writer reads their rows itself).
    ``data.train: shards://DIR`` streams the splits of a shard directory instead (``_from_shards``).
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ConfigError(f"splits: {unknown[0]!r} is not a split; allowed: {', '.join(SPLITS)}")
    check_policy(config.data.missing)
    config = config.copy()
    from polyfuse.data.shards import is_shards

    if is_shards(config.data.train):
        return _from_shards(config, pipeline, splits)
    if config.data.dataset:
        config, files, root = _builtin(config)
    elif config.data.train:
        files = {"train": config.data.train, "valid": config.data.valid, "test": config.data.test}
        root = Path(config.data.root) if config.data.root else Path(config.data.train).parent
    else:
        raise ConfigError("data: set data.dataset (a built-in name) or data.train (a manifest file)")
    root = root.expanduser().resolve()
    tables = _read_tables(config, files, splits)
    _check_task_columns(config, tables, reuse=pipeline is not None)
    if not config.data.inputs and pipeline is None:
        config.data.inputs = _infer_inputs(config, tables["train"], root)
    _select_inputs(config)
    _pretrained_statistics(config)

    _check_input_columns(config, pipeline, tables)
    report = DataReport()
    lazy = _reads_lazily(config, len(tables["train"].frame)) and scan
    if lazy and config.data.fit_rows is None and pipeline is None:
        config.data.fit_rows = LAZY_FIT_ROWS  # fitting stays bounded too (recorded in the run's config.yaml)
    if pipeline is None:
        train = tables["train"]
        fit_frame = train.frame
        if config.data.fit_rows is not None and config.data.fit_rows < len(fit_frame):
            fit_frame = fit_frame.sample(n=max(1, int(config.data.fit_rows)), random_state=config.data.split.seed)
        pipeline = DataPipeline.fit(
            config.data, config.tasks, fit_frame, root=root, source=train.source, report=report, progress=progress,
        )
    datasets: dict[str, MultimodalDataset] = {}
    for split in splits:
        if split not in tables:
            continue
        table = tables[split]
        datasets[split] = MultimodalDataset(
            table.frame, pipeline, split=split, root=root, source=table.source, policy=config.data.missing,
            report=report, augment=config.data.augment if split == "train" else None, seed=config.train.seed,
            cache=config.data.cache and not lazy, allow_outside_root=config.data.allow_outside_root, lazy=lazy,
        )
        if scan and not lazy:
            datasets[split].scan(progress=progress)
    return PreparedData(config=config, pipeline=pipeline, datasets=datasets, report=report, root=root)


__all__ = ["PreparedData", "prepare_data"]
