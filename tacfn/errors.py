"""User-facing errors: the CLI prints their message as one line and exits non-zero."""

from __future__ import annotations

from types import UnionType
from typing import TYPE_CHECKING, Any, Union, get_args, get_origin

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class TacfnError(Exception):
    """Base class for errors a user can fix (bad input, missing files)."""


class ConfigError(TacfnError, ValueError):
    """A configuration file or option is invalid."""


class DataError(TacfnError):
    """A dataset folder or file is missing, malformed or unreadable."""


class MediaError(DataError):
    """One media file cannot be decoded or is too short; preparation skips it."""


def brief(exc: BaseException) -> str:
    """An exception's first sentence on one line, at most 200 characters (its type if it has
    no message): for one-line errors that quote a library's exception."""
    return " ".join(str(exc).split()).split(". ")[0][:200] or type(exc).__name__


def describe_validation_error(err: ValidationError, model: type[BaseModel] | None = None, at: str = "") -> str:
    """The first error of a pydantic ValidationError on one line, ``key: rule``, for a
    ConfigError that the caller starts with the file's name.

    The key is dotted from ``at`` (where ``model``'s mapping sits in the file) and the error's
    location; an error about the whole mapping gives ``at: rule``, or the rule alone. An
    unknown key lists the valid ones when ``model`` is the model validated; a value of the
    wrong type, or not finite, is quoted (``got '64'``: YAML read a string). ``(and N more)``
    counts the other errors.
    """
    first = err.errors()[0]
    loc = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        valid = _keys_at(model, loc[:-1]) if model is not None else None
        message = f"unknown key; valid: {valid}" if valid else "unknown key"
    elif first["type"].endswith("_type") or first["type"] == "finite_number":
        message = f"{message}, got {first['input']!r}"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    key = ".".join(part for part in (at, *loc) if part)
    return f"{key}: {message}{more}" if key else f"{message}{more}"


def _keys_at(root: type[BaseModel], path: list[str]) -> list[str] | None:
    """The keys of the pydantic model found at ``path`` under ``root`` (None: not a model)."""
    from pydantic import BaseModel  # here: this module is imported by code that never validates

    kind: Any = root
    for part in path:
        kind = _unwrap_optional(kind)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = next((f for n, f in kind.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return None
            kind = field.annotation
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        else:
            return None
    kind = _unwrap_optional(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return sorted(f.alias or n for n, f in kind.model_fields.items())
    return None


def _unwrap_optional(kind: Any) -> Any:
    if get_origin(kind) in (Union, UnionType):
        args = [arg for arg in get_args(kind) if arg is not type(None)]
        return args[0] if len(args) == 1 else kind
    return kind
