"""Config -> modules. The one place where configuration turns into built parts."""

from __future__ import annotations

import difflib
import inspect
import re
from typing import Any, Mapping

from torch import nn

from polyfuse.config import (
    ComponentConfig, Config, ConfigError, EnsembleMemberConfig, ModelConfig, TaskConfig, check_finetune_options,
)
from polyfuse.data.labels import target_options
from polyfuse.registry import ENCODERS, FUSIONS, HEADS, OBJECTIVES, PROCESSORS, Registry, call_with
from polyfuse.tasks import TASKS
from polyfuse.types import INPUT_KINDS, InputSpec

#: Encoder used for an input kind when the config names none.
DEFAULT_ENCODERS: dict[str, str] = {
    "image": "lenet",
    "text": "text_transformer",
    "audio": "audio_cnn",
    "sequence": "sequence_rnn",
    "tabular": "tabular_mlp",
    "video": "video_frames",
}

#: Head and loss per task type (the task types' defaults, ``polyfuse.tasks``).
TASK_HEADS: dict[str, str] = {name: t.head for name, t in TASKS.items()}
TASK_LOSSES: dict[str, str] = {name: t.loss for name, t in TASKS.items()}

#: Arguments the builder supplies itself; a config may not set them.
_INJECTED_ENCODER_ARGS = {
    "in_channels", "image_size", "num_frames", "vocab_size", "pad_id", "max_length",
    "sample_rate", "num_samples", "feature_dim", "num_numeric", "cat_cardinalities",
}
_INJECTED_FUSION_ARGS = {"input_dims"}
_INJECTED_HEAD_ARGS = {"in_dim", "out_dim", "max_length"}  # max_length: generation targets
_INJECTED_OBJECTIVE_ARGS = {"input_dims", "fusion_dim", "specs", "objectives"}


def _suggest(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_component(
    registry: Registry[Any], comp: ComponentConfig, path: str, injected: set[str], kind: str | None = None
) -> None:
    """Fail with the key path when a component name or parameter is not valid."""
    if comp.name not in registry:
        allowed = registry.names(modality=kind) if kind else registry.names()
        raise ConfigError(
            f"{path}.name: {comp.name!r} is not a registered {registry.kind}{_suggest(comp.name, allowed)}; "
            f"allowed: {', '.join(allowed)}"
        )
    entry = registry.get(comp.name)
    if kind is not None:
        kinds = entry.metadata.get("modalities", ())
        if kinds and kind not in kinds:
            raise ConfigError(
                f"{path}.name: {registry.kind} {comp.name!r} does not read {kind!r} inputs; "
                f"allowed for {kind}: {', '.join(registry.names(modality=kind))}"
            )
    params = entry.parameters()
    settable = [p for p in params if p not in injected]
    accepts_kwargs = any(
        p.kind == p.VAR_KEYWORD for p in inspect.signature(entry.factory).parameters.values()
    )
    for key in comp.params:
        if key in injected:
            raise ConfigError(f"{path}.{key}: set by polyfuse from the data; remove it from the config")
        if key not in params and not accepts_kwargs:
            raise ConfigError(
                f"{path}.{key}: unknown parameter of {registry.kind} {comp.name!r}"
                f"{_suggest(key, settable)}; allowed: {', '.join(settable) or '(none)'}"
            )


def validate_config(config: Config) -> None:
    """Check names and parameters against the registries, before any data is read."""
    import polyfuse.data  # noqa: F401  (registers processors and datasets)

    for name, inp in config.data.inputs.items():
        path = f"data.inputs.{name}"
        if inp.kind not in INPUT_KINDS:
            raise ConfigError(f"{path}.kind: {inp.kind!r} is not an input kind; allowed: {', '.join(INPUT_KINDS)}")
        if inp.kind in PROCESSORS:
            check_component(PROCESSORS, ComponentConfig(inp.kind, inp.options), path, set())
    _check_model_parts(config, config.model.encoders, config.model.fusion, "model")
    for i, member in enumerate(config.model.ensemble):
        path = f"model.ensemble[{i}]"
        _check_model_parts(config, member.encoders, member.fusion, path)
        if member.weight < 0:
            raise ConfigError(f"{path}.weight: must be >= 0, got {member.weight}")
    for tname, task in config.tasks.items():
        path = f"tasks.{tname}"
        try:
            target_options(task)
        except ConfigError as exc:
            raise ConfigError(f"{path}.{exc}") from None
        head = ComponentConfig(TASK_HEADS[task.type], task.head)
        check_component(HEADS, head, f"{path}.head", _INJECTED_HEAD_ARGS)
        loss = task.loss or TASK_LOSSES[task.type]
        if loss not in OBJECTIVES:
            raise ConfigError(f"{path}.loss: {loss!r} is not an objective; allowed: {', '.join(OBJECTIVES.names())}")
    for oname, comp in config.objectives.items():
        check_component(OBJECTIVES, comp, f"objectives.{oname}", _INJECTED_OBJECTIVE_ARGS | {"weight"})
    if config.data.dataset is None and config.data.train is None:
        raise ConfigError("data: set data.dataset (a built-in name) or data.train (a manifest file)")
    check_finetune_options(config)


def _check_model_parts(config: Config, encoders: Mapping[str, ComponentConfig], fusion: ComponentConfig, path: str) -> None:
    """The encoders (against their inputs' kinds) and the fusion of a model (or of an ensemble member at ``path``)."""
    for name, comp in encoders.items():
        kind = config.data.inputs[name].kind if name in config.data.inputs else None
        check_component(ENCODERS, comp, f"{path}.encoders.{name}", _INJECTED_ENCODER_ARGS, kind)
    check_component(FUSIONS, fusion, f"{path}.fusion", _INJECTED_FUSION_ARGS)


def at_path(path: str, exc: ConfigError) -> ConfigError:
    """A component's ConfigError with its config key path in front.

    Components name only their own parameter (``rank_dim: ...``) or say what is wrong; the
    builder knows where they sit in the config: ``model.fusion.rank_dim: ...``, ``model.encoders.image: ...``.
    """
    message = str(exc)
    head = message.split(":", 1)[0]
    if ":" in message and re.fullmatch(r"[A-Za-z_][\w.\[\]]*", head):
        return ConfigError(f"{path}.{message}")
    return ConfigError(f"{path}: {message}")


def build_encoder(spec: InputSpec, comp: ComponentConfig | None, dim: int, path: str | None = None) -> nn.Module:
    """The encoder of one input (``path`` defaults to ``model.encoders.<input>``, for error messages)."""
    comp = comp or ComponentConfig(DEFAULT_ENCODERS[spec.kind])
    offered = {"dim": dim, **spec.encoder_kwargs()}
    try:
        return call_with(ENCODERS.get(comp.name).factory, offered, comp.params)
    except ConfigError as exc:
        raise at_path(path or f"model.encoders.{spec.name}", exc) from None


def build_fusion(comp: ComponentConfig, input_dims: dict[str, int], dim: int, path: str = "model.fusion") -> nn.Module:
    try:
        return call_with(FUSIONS.get(comp.name).factory, {"input_dims": input_dims, "dim": dim}, comp.params)
    except ConfigError as exc:
        raise at_path(path, exc) from None


def build_head(
    task_type: str, params: Mapping[str, Any], in_dim: int, out_dim: int, path: str = "head", **offered: Any
) -> nn.Module:
    """The head of a task type (``path``: its config key, ``tasks.<name>.head``); ``offered`` are further injected values."""
    try:
        return call_with(HEADS.get(TASK_HEADS[task_type]).factory, {"in_dim": in_dim, "out_dim": out_dim, **offered}, params)
    except ConfigError as exc:
        raise at_path(path, exc) from None


def head_offers(task: TaskConfig) -> dict[str, Any]:
    """Values injected into a task's head besides its widths: a generation head's ``max_length``."""
    return TASKS[task.type].head_offers(task)


def member_config(config: Config, member: EnsembleMemberConfig) -> Config:
    """The config of one ensemble member: ``config`` with the member's inputs, encoders, fusion and heads."""
    out = config.copy()
    out.model = ModelConfig(encoders=dict(member.encoders), fusion=member.fusion, dim=member.dim)
    for task, head in member.heads.items():
        if task not in out.tasks:
            raise ConfigError(f"model.ensemble: member {member.name!r} has a head for {task!r}, which is not a task")
        out.tasks[task].head = dict(head)
    out.data.use = list(member.inputs)
    out.data.inputs = {k: v for k, v in out.data.inputs.items() if k in member.inputs}
    out.objectives = {}
    return out


def build_ensemble(config: Config, specs: Mapping[str, InputSpec], task_dims: Mapping[str, int]) -> nn.Module:
    """An EnsembleModel of ``config.model.ensemble``'s members (each built as its own MultimodalModel)."""
    from polyfuse.ensemble import EnsembleModel

    members = []
    for i, member in enumerate(config.model.ensemble):
        missing = [n for n in member.inputs if n not in specs]
        if missing:
            raise ConfigError(f"model.ensemble[{i}].inputs: {missing[0]!r} is not an input of the data pipeline")
        try:
            members.append(build_model(member_config(config, member), {n: specs[n] for n in member.inputs}, task_dims))
        except ConfigError as exc:  # the member's own keys: model.fusion -> model.ensemble[i].fusion
            raise ConfigError(_member_path(str(exc), i, member)) from None
    return EnsembleModel(members, [m.weight for m in config.model.ensemble],
                         {name: task.type for name, task in config.tasks.items()}, input_order=list(specs))


def _member_path(message: str, index: int, member: EnsembleMemberConfig) -> str:
    """A build error of ensemble member ``index`` with the key path where the member's value is written."""
    where = f"model.ensemble[{index}]"
    if message.startswith("model."):
        return where + message[len("model"):]
    for task in member.heads:
        prefix = f"tasks.{task}.head"
        if message.startswith(prefix):
            return f"{where}.heads.{task}" + message[len(prefix):]
    return f"{where}: {message}"


def build_model(config: Config, specs: Mapping[str, InputSpec], task_dims: Mapping[str, int]) -> nn.Module:
    """Build a MultimodalModel (an EnsembleModel when ``model.ensemble`` lists members) from a config,
    the fitted input specs and each task's output width."""
    from polyfuse.model import MultimodalModel

    if config.model.ensemble:
        return build_ensemble(config, specs, task_dims)
    dim = config.model.dim
    encoders = {name: build_encoder(spec, config.model.encoders.get(name), dim) for name, spec in specs.items()}
    input_dims = {name: enc.output_dim for name, enc in encoders.items()}
    fusion = build_fusion(config.model.fusion, input_dims, dim)
    heads = {
        tname: build_head(task.type, task.head, fusion.output_dim, task_dims[tname], f"tasks.{tname}.head", **head_offers(task))
        for tname, task in config.tasks.items()
    }
    objectives = build_objectives(config, input_dims, getattr(fusion, "output_dim", None), specs)
    return MultimodalModel(encoders, fusion, heads, objectives)


def build_objective(task_type: str, loss: str | None, **kwargs: Any) -> nn.Module:
    name = loss or TASK_LOSSES[task_type]
    return call_with(OBJECTIVES.get(name).factory, kwargs, {})


def build_objectives(
    config: Config, input_dims: Mapping[str, int], fusion_dim: int | None, specs: Mapping[str, InputSpec]
) -> dict[str, nn.Module]:
    """Pretraining / auxiliary objectives of ``config.objectives`` (their ``weight`` is read by the trainer).

    Each gets, by parameter name, ``input_dims`` (encoder widths), ``fusion_dim``, ``specs`` and
    ``objectives`` (the ones listed before it, built; to read e.g. a contrastive space's width).
    Its forward is ``(model, batch, model_output) -> dict`` with a scalar ``"loss"``.
    A ConfigError raised by a constructor is prefixed with its key path ``objectives.<name>.``.
    """
    out: dict[str, nn.Module] = {}
    offered = {"input_dims": dict(input_dims), "fusion_dim": fusion_dim, "specs": dict(specs), "objectives": out}
    for name, comp in config.objectives.items():
        params = {k: v for k, v in comp.params.items() if k != "weight"}
        try:
            out[name] = call_with(OBJECTIVES.get(comp.name).factory, offered, params)
        except ConfigError as exc:
            raise at_path(f"objectives.{name}", exc) from None
    return out


def objective_weights(config: Config) -> dict[str, float]:
    return {name: float(comp.params.get("weight", 1.0)) for name, comp in config.objectives.items()}
