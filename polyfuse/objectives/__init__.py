"""Objectives; importing this package registers them in ``polyfuse.registry.OBJECTIVES``."""

from polyfuse.objectives.base import Objective
from polyfuse.objectives.task import (
    BCEObjective,
    CrossEntropyObjective,
    L1Objective,
    MSEObjective,
    combine_losses,
)

__all__ = ["BCEObjective", "CrossEntropyObjective", "L1Objective", "MSEObjective", "Objective", "combine_losses"]

# cross-modal objectives (contrastive space, matching, masked LM, translation)
from polyfuse.objectives.contrastive import ContrastiveObjective, RetrievalSpace  # noqa: E402
from polyfuse.objectives.matching import MatchingObjective  # noqa: E402
from polyfuse.objectives.mlm import MaskedLMObjective  # noqa: E402
from polyfuse.objectives.translation import TranslationObjective  # noqa: E402

__all__ += ["ContrastiveObjective", "MatchingObjective", "MaskedLMObjective", "RetrievalSpace", "TranslationObjective"]
