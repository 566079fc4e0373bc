"""The variants a fusion comparison trains: each input alone, then each fusion (optionally again with
modality dropout), each one the base config plus a few dotted overrides. Shared by
``polyfuse benchmark fusion`` and the own-table selection (``train/table_fit.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

UNIMODAL = "unimodal"
FUSION = "fusion"


@dataclass
class Variant:
    """One row of the leaderboard: a name, what it is, and the overrides that make it from the base config."""

    key: str
    kind: str  # UNIMODAL | FUSION
    overrides: list[str]
    fusion: str | None = None
    modality_dropout: float = 0.0
    runs: list[dict[str, Any]] = field(default_factory=list)


def plan_variants(
    inputs: Sequence[str], fusions: Sequence[str], modality_dropout: float = 0.0, unimodal: bool = True
) -> list[Variant]:
    """Unimodal baselines (one per input), then each fusion; with ``modality_dropout`` > 0 each fusion
    also trained with it (key ``<fusion>+md``) for the robustness comparison."""
    variants: list[Variant] = []
    if unimodal and len(inputs) > 1:
        for name in inputs:
            variants.append(Variant(f"{name} only", UNIMODAL, [f"data.use=[{name}]", "data.augment.modality_dropout=0.0"]))
    for fusion in fusions:
        # the whole fusion entry is replaced: the base config's fusion parameters belong to its own fusion
        base = [f"model.fusion={{name: {fusion}}}", "data.augment.modality_dropout=0.0"]
        variants.append(Variant(fusion, FUSION, base, fusion=fusion))
        if modality_dropout > 0:
            md = [f"model.fusion={{name: {fusion}}}", "data.augment.enabled=true", f"data.augment.modality_dropout={modality_dropout}"]
            variants.append(Variant(f"{fusion}+md", FUSION, md, fusion=fusion, modality_dropout=modality_dropout))
    return variants
