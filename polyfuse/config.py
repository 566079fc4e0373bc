"""Typed configuration: dataclasses read from and written to YAML, with dotted overrides.

A config is validated as it is read: unknown keys, wrong types and values outside a
fixed set fail at once with the key path (``model.fusion.dim``) and what is allowed.
Component names (encoders, fusions, ...) and their parameters are checked against the
registries by ``polyfuse.build.validate_config``, before any data is read.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from polyfuse.errors import ConfigError


# --------------------------------------------------------------------------- components


@dataclass
class ComponentConfig:
    """A registered component by name plus its constructor parameters.

    YAML: ``fusion: gated`` or ``fusion: {name: gated, dim: 256}``.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, path: str) -> "ComponentConfig":
        if isinstance(value, ComponentConfig):
            return value
        if isinstance(value, str):
            return cls(name=value)
        if isinstance(value, dict):
            if "name" not in value or not isinstance(value["name"], str):
                raise ConfigError(f"{path}.name: required (a registered name)")
            params = {k: v for k, v in value.items() if k != "name"}
            if "params" in params and isinstance(params["params"], dict) and len(params) == 1:
                params = dict(params["params"])
            return cls(name=value["name"], params=params)
        raise ConfigError(f"{path}: expected a name or a mapping with 'name', got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **copy.deepcopy(self.params)}


@dataclass
class InputConfig:
    """One model input: its kind and the options of that kind's processor.

    YAML: ``image: {kind: image, column: path, size: [28, 28], channels: 1}``.
    """

    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any, path: str) -> "InputConfig":
        if isinstance(value, InputConfig):
            return value
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise ConfigError(f"{path}.kind: required, one of image, text, audio, sequence, tabular, video")
        return cls(kind=value["kind"], options={k: v for k, v in value.items() if k != "kind"})

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **copy.deepcopy(self.options)}


# --------------------------------------------------------------------------- sections


@dataclass
class SplitConfig:
    """How rows are split when only a training manifest (or one table) is given."""

    valid: float = 0.1
    test: float = 0.1
    seed: int = 0
    stratify: str | None = "auto"  # "auto" = the first classification task's label column; null = none
    group: str | None = None  # a column whose values never straddle splits (speaker, subject, ...)


@dataclass
class AugmentConfig:
    """Training-split augmentation; off unless ``enabled`` (``modality_dropout`` works on its own). Seeded by ``train.seed``."""

    enabled: bool = False
    image_crop: float = 0.0  # random resized crop: minimum area fraction kept (0 = off)
    image_flip: bool = False
    image_jitter: float = 0.0  # colour jitter strength (brightness/contrast/saturation)
    audio_time_mask: int = 0  # max frames masked (applied on spectrogram / sequence frames)
    audio_freq_mask: int = 0  # max frequency bins / features masked
    audio_gain_db: float = 0.0
    audio_noise: float = 0.0  # additive noise std (relative to signal std)
    text_token_dropout: float = 0.0
    sequence_noise: float = 0.0
    modality_dropout: float = 0.0  # probability of dropping each modality of a row (never all)


@dataclass
class DataConfig:
    dataset: str | None = None  # built-in dataset name (see `polyfuse datasets`)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    train: str | None = None  # manifest: .csv .tsv .parquet .jsonl
    valid: str | None = None
    test: str | None = None
    root: str | None = None  # file paths resolve against this (default: the manifest's folder)
    allow_outside_root: bool = False
    inputs: dict[str, InputConfig] = field(default_factory=dict)  # empty = inferred
    use: list[str] | None = None  # only these inputs (unimodal baselines, ablations); None = all
    missing: Literal["missing", "skip", "error"] = "missing"
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    batch_size: int = 64
    eval_batch_size: int | None = None
    num_workers: int = 0
    cache: bool = True  # keep decoded rows in memory after the first epoch
    max_rows: int | None = None  # use only the first N rows of each split (quick runs, tests)
    max_train_rows: int | None = None  # use only the first N TRAINING rows (few-label fine-tuning); valid/test kept
    fit_rows: int | None = None  # fit the pipeline (vocabularies, normalisation) on a seeded sample of N training rows
    shuffle_buffer: int = 1000  # training from shards (data.train: shards://DIR): raw rows mixed per loader worker
    # "full": decode every row before training (problems found up front, rows cached when data.cache);
    # "lazy": no up-front pass, no row cache, problems recorded as rows are first read; "auto": lazy
    # when the training table has more than lazy_rows rows (and data.missing is not skip)
    scan: Literal["auto", "full", "lazy"] = "auto"
    lazy_rows: int = 50_000


@dataclass
class EnsembleMemberConfig:
    """One model of an ensemble: its inputs (a subset of ``data.inputs``), encoders, fusion and heads.

    The members share the config's data pipeline and tasks (a member's ``heads`` entry replaces a
    task's head parameters for that member); their weights live in the
    ensemble's ``model.safetensors`` under ``members.<i>.``.
    """

    name: str
    weight: float
    inputs: list[str]
    encoders: dict[str, ComponentConfig] = field(default_factory=dict)
    fusion: ComponentConfig = field(default_factory=lambda: ComponentConfig("concat"))
    dim: int = 128
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)  # task -> this member's head parameters (empty: the task's)


@dataclass
class ModelConfig:
    encoders: dict[str, ComponentConfig] = field(default_factory=dict)  # input name -> encoder
    fusion: ComponentConfig = field(default_factory=lambda: ComponentConfig("concat"))
    dim: int = 128  # default width for encoders / fusions that take ``dim``
    # non-empty: the model is a weighted average of these members' predictions (written by the
    # table selection; ``encoders`` / ``fusion`` above then describe the first member's data)
    ensemble: list[EnsembleMemberConfig] = field(default_factory=list)


@dataclass
class TaskConfig:
    column: str
    type: Literal["classification", "regression", "multilabel", "generation"] = "classification"
    weight: float = 1.0
    loss: str | None = None  # default per type: cross_entropy / mse / bce / sequence_cross_entropy
    head: dict[str, Any] = field(default_factory=dict)  # head constructor parameters
    classes: list[Any] | None = None  # fixed label vocabulary; default: fitted on train
    label_smoothing: float = 0.0
    # classification: "balanced" weighs each class by n_rows / (n_classes * n_class_rows) (fitted on train)
    class_weights: Literal["none", "balanced"] = "none"
    # binary classification: "tune" picks the decision threshold on validation for train.monitor's
    # metric (macro-F1 unless it is acc) and folds it into the head's bias, so every engine uses it
    threshold: Literal["none", "tune"] = "none"
    # generation: options of the text-target encoder (max_length, vocab_size, min_count, lowercase)
    target: dict[str, Any] = field(default_factory=dict)


@dataclass
class EarlyStoppingConfig:
    patience: int | None = None  # None = no early stopping
    min_delta: float = 0.0


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = -1
    min_steps: int = 0  # early stopping cannot end a run before this many optimizer steps
    max_seconds: float | None = None  # stop training after this long (the best checkpoint so far is kept)
    eval_every_n_epochs: int = 1  # validation (and the epoch checkpoint) every N epochs
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.05  # fraction of total steps
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float | None = 1.0
    accumulate: int = 1
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    seed: int = 0
    monitor: str | None = None  # metric that picks the best checkpoint; default: first task's main metric
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | ...
    deterministic: bool = False
    progress: bool = True
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int | None = None  # extra mid-epoch "last" checkpoints
    threads: int | None = None  # torch intra-op threads (None = torch default)
    # fixed features (features-first encoders, frozen pretrained embeddings) computed once per row:
    # disk = cached under $POLYFUSE_CACHE/features, memory = once per run, off = every batch
    feature_cache: Literal["disk", "memory", "off"] = "disk"
    # gradient = optimizer steps (Lightning); convex = a model linear in fixed features (n-gram TF-IDF,
    # cached features; `linear` fusion, heads without hidden layer) fitted to the optimum by
    # scikit-learn's logistic / ridge regression, its L2 strength chosen on validation
    solver: Literal["gradient", "convex"] = "gradient"
    # fine-tuning: encoders frozen for the first N epochs, then trained; encoder lr decayed per depth
    freeze_epochs: int = 0
    layerwise_lr_decay: float | None = None  # e.g. 0.8: a block's lr = lr * decay ** (blocks above it)
    # experiment tracking through Lightning loggers: one of LOGGERS or a list (e.g. [tensorboard, mlflow])
    logger: str | list[str] = "tensorboard"
    tracking_uri: str | None = None  # mlflow store; default sqlite:///<run dir>/mlflow.db (file:<run dir>/mlruns without SQLAlchemy)
    experiment: str | None = None  # mlflow experiment / wandb project; default "polyfuse"

    LOGGERS: ClassVar[tuple[str, ...]] = ("tensorboard", "csv", "mlflow", "wandb")

    def __post_init__(self) -> None:
        self.logger_names()

    def logger_names(self) -> list[str]:
        """``logger`` as a list of distinct names; ConfigError naming ``train.logger`` for anything else."""
        names = [self.logger] if isinstance(self.logger, str) else list(self.logger)
        allowed = ", ".join(self.LOGGERS)
        if not names:
            raise ConfigError(f"train.logger: empty; give one of {allowed} or a list of them")
        for name in names:
            if name not in self.LOGGERS:
                raise ConfigError(
                    f"train.logger: {name!r} is not a logger; allowed: {allowed} (one name or a list, e.g. [tensorboard, mlflow])"
                )
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ConfigError(f"train.logger: {twice[0]!r} is named twice")
        return names


@dataclass
class RetrievalConfig:
    """Retrieval evaluation of runs with contrastive / translation objectives (recall@K, median rank)."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    match: str | None = None  # manifest column: rows with equal values count as matches (default: the row's own pair)
    max_rows: int | None = None  # evaluate on at most the first N rows of a split (None = all)


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    objectives: dict[str, ComponentConfig] = field(default_factory=dict)  # pretraining / auxiliary losses
    train: TrainConfig = field(default_factory=TrainConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    init_from: str | None = None  # a checkpoint directory whose matching weights load first
    freeze: list[str] = field(default_factory=list)  # module name prefixes to freeze (e.g. "encoders.text")
    extra: dict[str, Any] = field(default_factory=dict)  # free space for recipes and tools

    # ------------------------------------------------------------------ io
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        return _parse(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> "Config":
        raw = load_yaml(path)
        return cls.from_dict(apply_overrides(raw, overrides or []))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def with_overrides(self, overrides: list[str]) -> "Config":
        return Config.from_dict(apply_overrides(self.to_dict(), overrides))

    def copy(self) -> "Config":
        return Config.from_dict(self.to_dict())


# --------------------------------------------------------------------------- helpers


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a plain dict copy."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = out
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str) and i + 1 < len(parts):
                # ``fusion: gated`` given as a plain name: expand to a mapping to set a param
                child = {"name": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a mapping")
            node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _parse(tp: Any, value: Any, path: str) -> Any:
    label = path or "config"
    if tp is Any:
        return copy.deepcopy(value)
    if tp is ComponentConfig:
        return ComponentConfig.parse(value, label)
    if tp is InputConfig:
        return InputConfig.parse(value, label)
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        # YAML reads 32 as an int: accept it for the string literal "32"
        if value not in allowed and str(value) in allowed:
            value = str(value)
        if value is False and "off" in allowed:  # YAML 1.1 reads a bare ``off`` as false
            value = "off"
        if value not in allowed:
            raise ConfigError(f"{label}: {value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{label}: required, expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{label}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: expected a mapping, got {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        unknown = [k for k in value if k not in names]
        if unknown:
            raise ConfigError(
                f"{(path + '.') if path else ''}{unknown[0]}: unknown key; allowed: {', '.join(names)}"
            )
        kwargs = {}
        for f in dataclasses.fields(tp):
            sub = f"{path}.{f.name}" if path else f.name
            if f.name in value:
                kwargs[f.name] = _parse(hints[f.name], value[f.name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{sub}: required")
        return tp(**kwargs)
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{label}: expected a mapping, got {value!r}")
        return {str(k): _parse(val_tp, v, f"{path}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp)[:1] or (Any,)
        if value is None:
            return []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{label}: expected a list, got {value!r}")
        return [_parse(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{label}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{label}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{label}: expected a string, got {value!r}")
    raise ConfigError(f"{label}: unsupported type {tp}")


def _dump(obj: Any) -> Any:
    if isinstance(obj, (ComponentConfig, InputConfig)):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: _dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_dump(v) for v in obj]
    return obj


def check_finetune_options(config: Config) -> None:
    """Fail early on fine-tuning options out of range (``train.freeze_epochs``, ``train.layerwise_lr_decay``)."""
    train = config.train
    if train.freeze_epochs < 0:
        raise ConfigError(f"train.freeze_epochs: must be 0 or more, got {train.freeze_epochs}")
    decay = train.layerwise_lr_decay
    if decay is not None and not 0.0 < decay <= 1.0:
        raise ConfigError(f"train.layerwise_lr_decay: must be in (0, 1] (or null = off), got {decay}")
    ks = config.retrieval.ks
    if not ks or any(k < 1 for k in ks):
        raise ConfigError(f"retrieval.ks: expected a list of positive integers, got {ks}")
