"""polyfuse: multimodal deep learning on PyTorch.

Public API (small on purpose)::

    import polyfuse
    run = polyfuse.fit("avmnist-fused", out="runs/av")     # a recipe, YAML file, Config or dict
    model = polyfuse.load("runs/av")                        # a checkpoint directory
    preds = model.predict(rows)                             # rows: DataFrame, list of dicts or a manifest
    polyfuse.list_components()                              # registered encoders, fusions, heads, ...
    search = polyfuse.tune("tiny-avmnist", "space.yaml", trials=8)  # Optuna search; search.best_dir
"""

from __future__ import annotations

from typing import Any

from polyfuse._version import __version__

__all__ = ["__version__", "Config", "build_model", "list_components", "fit", "load", "load_model", "tune"]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import polyfuse` (and the CLI's --help) fast.
    if name == "Config":
        from polyfuse.config import Config

        return Config
    if name == "build_model":
        from polyfuse.build import build_model

        return build_model
    if name == "fit":
        from polyfuse.api import fit

        return fit
    if name in ("load", "load_model"):
        from polyfuse.api import load

        return load
    if name == "tune":
        from polyfuse.api import tune

        return tune
    raise AttributeError(f"module 'polyfuse' has no attribute {name!r}")


def list_components() -> dict[str, Any]:
    """Registered names: ``{"encoders": {input kind: [names]}, "fusions": [...], "heads": [...], ...}``.

    Encoders are grouped by the input kind they read; ``timeseries`` repeats ``sequence`` (sensor and
    time-series inputs are ``sequence`` inputs in configs).
    """
    from polyfuse.registry import DATASETS, ENCODERS, FUSIONS, HEADS, OBJECTIVES, load_all
    from polyfuse.types import INPUT_KINDS

    load_all()

    encoders: dict[str, list[str]] = {kind: [] for kind in INPUT_KINDS}
    for name, entry in ENCODERS.items():
        for kind in entry.metadata.get("modalities", ()):
            encoders.setdefault(kind, []).append(name)
    encoders["timeseries"] = list(encoders.get("sequence", []))
    return {
        "encoders": {kind: sorted(names) for kind, names in encoders.items()},
        "fusions": FUSIONS.names(),
        "heads": HEADS.names(),
        "objectives": OBJECTIVES.names(),
        "datasets": DATASETS.names(),
    }
