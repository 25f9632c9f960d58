"""Dotted keys in nested mappings: one way to set, check, flatten and prune them."""

from __future__ import annotations

import pytest

from tacfn.errors import ConfigError
from tacfn.nested import apply_overrides, flatten, has_dotted, prune_empty, set_dotted


def test_set_dotted_adds_missing_mappings_in_place():
    data = {"train": {"epochs": 3}}
    set_dotted(data, "train.lr", 0.01)
    set_dotted(data, "model.fusion.heads", 2)
    set_dotted(data, "seed", 1)
    assert data == {"train": {"epochs": 3, "lr": 0.01}, "model": {"fusion": {"heads": 2}}, "seed": 1}


def test_set_dotted_through_a_value_names_the_key_and_what_is_in_the_way():
    data = {"model": {"preset": "lite"}}
    with pytest.raises(ConfigError, match=r"^cannot set model\.preset\.x: model\.preset is a str, not a mapping$"):
        set_dotted(data, "model.preset.x", 1)
    with pytest.raises(ConfigError, match=r"^cannot set model\.a\.b: model is a list, not a mapping$"):
        set_dotted({"model": [1]}, "model.a.b", 1)
    assert data == {"model": {"preset": "lite"}}


def test_apply_overrides_sets_dotted_keys_on_a_copy():
    base = {"model": {"preset": "lite"}, "train": {"epochs": 3}}
    out = apply_overrides(base, {"model.fusion.heads": 2, "train.lr": 0.01, "data.synthetic.seed": 5})
    assert out == {
        "model": {"preset": "lite", "fusion": {"heads": 2}},
        "train": {"epochs": 3, "lr": 0.01},
        "data": {"synthetic": {"seed": 5}},
    }
    assert base == {"model": {"preset": "lite"}, "train": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"cannot set model\.preset\.x: model\.preset is a str"):
        apply_overrides(base, {"model.preset.x": 1})


def test_has_dotted_counts_a_none_value_and_not_a_missing_or_blocked_path():
    data = {"data": {"cache_dir": None, "path": "x"}, "train": 3}
    assert has_dotted(data, "data.cache_dir") and has_dotted(data, "data") and has_dotted(data, "train")
    assert not has_dotted(data, "data.fold")
    assert not has_dotted(data, "model.fusion.heads")
    assert not has_dotted(data, "train.lr")  # train is a value, not a mapping
    assert not has_dotted(data, "data.path.x")


def test_flatten_gives_dotted_keys_for_values_and_none_for_empty_mappings():
    data = {
        "train": {"lr": 0.001, "amp": False},
        "model": {"modalities": ["audio"], "fusion": {}, "pretrain": None, "x": {"y": {}}},
        "seed": 3,
    }
    assert flatten(data) == {
        "train.lr": 0.001,
        "train.amp": False,
        "model.modalities": ["audio"],
        "model.pretrain": None,
        "seed": 3,
    }
    assert flatten({"a": {"b": 1}}, prefix="config.") == {"config.a.b": 1}
    assert flatten({}) == {}


def test_prune_empty_drops_mappings_without_values_at_any_depth():
    data = {"model": {"fusion": {}, "x": {"y": {}}, "preset": "lite"}, "data": {"z": {}}, "list": [{}], "none": None}
    assert prune_empty(data) == {"model": {"preset": "lite"}, "list": [{}], "none": None}
    assert prune_empty({"a": {}}) == {}
    assert prune_empty(3) == 3
    # pruning keeps exactly the keys flatten gives
    assert flatten(prune_empty(data)) == flatten(data)
    assert data["model"]["fusion"] == {}  # the input is left as it was
