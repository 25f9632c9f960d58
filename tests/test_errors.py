"""One-line messages for pydantic validation errors: the key, the rule, what was given."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from tacfn.errors import brief, describe_validation_error


class _Inner(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lr: float = Field(0.1, gt=0)
    heads: StrictInt = 1


class _Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train: _Inner = Field(default_factory=_Inner)
    maybe: _Inner | None = None
    named: dict[str, _Inner] = Field(default_factory=dict)
    step: int = Field(1, alias="int")

    @model_validator(mode="after")
    def _check(self) -> _Outer:
        if self.train.heads == 3:
            raise ValueError("three heads are not allowed")
        return self


def _message(data: object, model: type[BaseModel] | None = _Outer, at: str = "") -> str:
    with pytest.raises(ValidationError) as info:
        _Outer.model_validate(data)
    return describe_validation_error(info.value, model, at)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"train": {"lr": 0}}, "train.lr: Input should be greater than 0"),
        ({"train": {"lrr": 1}}, "train.lrr: unknown key; valid: ['heads', 'lr']"),
        ({"trian": {}}, "trian: unknown key; valid: ['int', 'maybe', 'named', 'train']"),  # an alias is the key written
        ({"maybe": {"x": 1}}, "maybe.x: unknown key; valid: ['heads', 'lr']"),  # through an optional
        ({"named": {"a": {"x": 1}}}, "named.a.x: unknown key; valid: ['heads', 'lr']"),  # through a dict
        ({"train": {"heads": "4"}}, "train.heads: Input should be a valid integer, got '4'"),  # YAML read a string
        ({"train": {"lr": float("nan")}}, "train.lr: Input should be a finite number, got nan"),
        ({"train": {"lr": 0, "heads": "4"}, "x": 1}, "train.lr: Input should be greater than 0 (and 2 more)"),
        ({"train": {"heads": 3}}, "three heads are not allowed"),  # the whole mapping: the rule alone
    ],
)
def test_first_error_on_one_line(data, expected):
    assert _message(data) == expected


def test_at_says_where_the_mapping_sits_in_the_file():
    assert _message({"train": {"lr": 0}}, at="base") == "base.train.lr: Input should be greater than 0"
    assert _message({"train": {"heads": 3}}, at="base") == "base: three heads are not allowed"


def test_without_the_model_an_unknown_key_is_named_alone():
    assert _message({"train": {"lrr": 1}}, model=None) == "train.lrr: unknown key"


def test_brief_keeps_the_first_sentence():
    assert brief(ValueError("First part. Second\npart.")) == "First part"
    assert brief(KeyError()) == "KeyError"
