"""Nested mappings addressed by dotted keys: ``{"train": {"lr": 0.1}}`` holds ``train.lr``.

Run configs, search spaces and ablation plans name options by dotted key (``--set
train.lr=0.01``, a space's axes, a plan's variants, a results store's ``config.*`` columns).
Every place that sets, checks, flattens or prunes such keys uses this module, so they agree.

An empty mapping holds no setting: ``{"model": {"fusion": {}}}`` says what ``{}`` says (the
fusion block's defaults). So :func:`flatten` gives it no key and :func:`prune_empty` drops it,
at any depth, together with a mapping left empty once its empty mappings are gone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


def has_dotted(data: Mapping[str, Any], key: str) -> bool:
    """Whether ``data`` holds ``key`` (its value may be None)."""
    *parents, leaf = key.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, Mapping) else None
    return isinstance(node, Mapping) and leaf in node


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` in ``data`` in place, adding the mappings on the way that are missing.

    A value on the way that is not a mapping raises ConfigError
    ``cannot set model.preset.x: model.preset is a str, not a mapping``.
    """
    *parents, leaf = key.split(".")
    node = data
    for depth, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            where = ".".join(parents[: depth + 1])
            raise ConfigError(f"cannot set {key}: {where} is a {type(node).__name__}, not a mapping")
    node[leaf] = value


def apply_overrides(base: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted key of ``flat`` set (``{"train.lr": 0.01}``);
    ``base`` is left as it was. Raises as :func:`set_dotted` does."""
    out = copy.deepcopy(dict(base))
    for key, value in flat.items():
        set_dotted(out, key, value)
    return out


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every value of a nested mapping under ``prefix + dotted key``; lists and None are values.

    ``{"train": {"lr": 0.1}, "model": {"fusion": {}}}`` gives ``{"train.lr": 0.1}``: an empty
    mapping holds no value, so it gives no key (see the module's docstring).
    """
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prune_empty(value: Any) -> Any:
    """``value`` without the mappings that hold no value, at any depth (lists are kept as they
    are): ``{"a": {"b": {}}, "c": 1}`` gives ``{"c": 1}``. It holds the keys :func:`flatten` gives."""
    if not isinstance(value, Mapping):
        return value
    pruned = {key: prune_empty(item) for key, item in value.items()}
    return {key: item for key, item in pruned.items() if not (isinstance(item, Mapping) and not item)}
