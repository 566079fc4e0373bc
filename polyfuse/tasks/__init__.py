"""Task types as components: ``TASKS[name]`` is the object that owns a type's behaviour.

Adding a task type is one file here with a ``TaskType`` subclass, and one line below.
"""

from __future__ import annotations

from polyfuse.tasks.base import TaskType
from polyfuse.tasks.classification import Classification
from polyfuse.tasks.generation import Generation
from polyfuse.tasks.multilabel import Multilabel
from polyfuse.tasks.regression import Regression

TASKS: dict[str, TaskType] = {t.name: t for t in (Classification(), Regression(), Multilabel(), Generation())}


def task_type(name: str) -> TaskType:
    """The task type called ``name``; KeyError naming the allowed ones otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task type {name!r}; allowed: {', '.join(TASKS)}") from None


def deployable_types() -> tuple[str, ...]:
    """Task types that are exported, served, ensembled and explained."""
    return tuple(name for name, t in TASKS.items() if t.deployable)


__all__ = ["TASKS", "TaskType", "deployable_types", "task_type"]
