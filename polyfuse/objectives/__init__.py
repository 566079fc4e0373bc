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
