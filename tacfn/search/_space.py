"""Search-space files: the shipped ones by name, and any YAML file, loaded and checked.

:func:`load_space` reads a file and :func:`parse_space` validates a mapping: first each key
(:mod:`._space_schema`), then that every trial the space can sample is a valid run config
(:mod:`._space_checks`), all before any Ray start. Every error is one ConfigError line,
``FILE: key: rule``. :mod:`._space_compile` turns the result into an Optuna space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..config import load_yaml
from ..errors import ConfigError, describe_validation_error
from ._space_checks import check_space
from ._space_schema import SearchSpec


# The shipped spaces: the checkout's search_spaces/, which a wheel installs beside tacfn.
SEARCH_SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"


def list_spaces() -> list[str]:
    """Names of the search-space files shipped in ``search_spaces/``."""
    names = []
    for path in sorted(SEARCH_SPACES_DIR.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "space" in data:
            names.append(path.stem)
    return names


def find_space(name_or_path: str | Path) -> Path:
    """A search-space file: an existing path, or a name from ``search_spaces/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"{name_or_path}: no such search-space file")
    for suffix in (".yaml", ".yml"):
        candidate = SEARCH_SPACES_DIR / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"unknown search space {str(name_or_path)!r}; valid: {list_spaces()} (or a path to a YAML file)")


def load_space(path: str | Path) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    return parse_space(load_yaml(Path(path)), str(path))


def parse_space(data: Any, source: str = "<space>") -> SearchSpec:
    """Validate a mapping as a :class:`SearchSpec`; every error is one ConfigError line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with name, base, space, search, got {type(data).__name__}")
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, SearchSpec)}") from None
    try:
        check_space(spec)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return spec
