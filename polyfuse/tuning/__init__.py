"""Hyperparameter search with Optuna: ``polyfuse tune`` and ``polyfuse.tune`` (see docs/tune.md).

space   the search-space file (dotted config keys -> choices or ranges), validated against the config
pruning the pruner by name and the Lightning callback that reports each validation pass
report  trials.csv, trials.md and search.png
study   the search itself: trials as training runs, shared storage, the best model kept in OUT/best
"""

from __future__ import annotations

from polyfuse.tuning.space import Param, SearchSpace, load_space
from polyfuse.tuning.study import TuneResult, base_from_plan, resolve_metric, run_tune

__all__ = ["Param", "SearchSpace", "TuneResult", "base_from_plan", "load_space", "resolve_metric", "run_tune"]
