"""The Ray layer: search spaces, Tune + Optuna searches, ablations, the results store.

The store and the space compiler import neither Ray nor torch (dashboards read the store on
a laptop without them); the runners import Ray when first used.
"""

from __future__ import annotations

from typing import Any

from ._space import SearchSpace, SearchSpec, compile_space, config_hash, find_space, list_spaces, load_space
from ._store import ExperimentStore, read_table

__all__ = [
    "ExperimentStore",
    "SearchSpace",
    "SearchSpec",
    "compile_space",
    "config_hash",
    "find_space",
    "list_spaces",
    "load_space",
    "read_table",
    "load_plan",
    "parse_plan",
    "run_ablation",
    "run_search",
]


def __getattr__(name: str) -> Any:
    if name == "run_search":
        from ._runner import run_search

        return run_search
    if name in ("run_ablation", "load_plan", "parse_plan"):
        from . import _ablation

        return getattr(_ablation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
