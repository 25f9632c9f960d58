"""The Ray layer: search spaces, Tune + Optuna searches, ablations.

Everything loads when first used, so importing this package starts neither Ray nor torch.
Results are written to and read from the results store, :mod:`tacfn.store`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "AxisInfo": "_space_compile",
    "SearchSpace": "_space_compile",
    "SearchSpec": "_space_schema",
    "compile_space": "_space_compile",
    "config_hash": "_space_compile",
    "find_space": "_space",
    "list_spaces": "_space",
    "load_space": "_space",
    "parse_space": "_space",
    "grid": "_space_compile",
    "run_search": "_runner",
    "trial_run_config": "_trainable",
    "init_ray": "_ray",
    "check_local_capacity": "_ray",
    "run_distributed": "_distributed",
    "experiment_spec": "_runner",
    "run_ablation": "_ablation",
    "find_plan": "_ablation",
    "load_plan": "_ablation",
    "parse_plan": "_ablation",
}

__all__ = [*_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
