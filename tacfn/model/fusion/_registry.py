"""The registry of fusion blocks: ablations swap blocks by name.

A block is a :class:`FusionBlock` (an ``nn.Module``) with the constructor ``(spec:
FusionSpec, cfg: FusionConfig)`` and ``forward(features: dict[str, Tensor]) -> Tensor``
returning logits of shape ``(B, *spec.out_shape)``. Its class attribute ``options`` names the
:class:`FusionConfig` fields it reads: ``tacfn model info`` shows those, a config that sets
another is refused, and a search samples an option only for the blocks that read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from torch import nn

from ...errors import ConfigError
from .._spec import FusionSpec
from ._config import FusionConfig, check_block_options


class FusionBlock(nn.Module):
    """The base class of a block, which sets ``options`` (see above)."""

    options: ClassVar[tuple[str, ...]]


def require_two_modalities(block: str, spec: FusionSpec) -> None:
    """Raise a one-line ConfigError when ``spec`` has fewer than two modalities for ``block``."""
    if len(spec.modalities) < 2:
        raise ConfigError(
            f"fusion block {block!r} fuses two or more modalities, but got {list(spec.names)}; "
            "for one modality use model.fusion.name: concat"
        )


_BLOCKS: dict[str, type[FusionBlock]] = {}
_T = TypeVar("_T", bound=type[FusionBlock])


def register_fusion_block(name: str) -> Callable[[_T], _T]:
    """Class decorator that adds a block under ``name``; a duplicate name raises."""

    def decorator(cls: _T) -> _T:
        if name in _BLOCKS:
            raise ValueError(
                f"fusion block {name!r} is already registered by {_BLOCKS[name].__qualname__}"
            )
        _BLOCKS[name] = cls
        return cls

    return decorator


def list_fusion_blocks() -> list[str]:
    """Names of every registered block, sorted."""
    return sorted(_BLOCKS)


def get_fusion_block_class(name: str) -> type[FusionBlock]:
    """The class registered under ``name``; an unknown name lists the known ones."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise ConfigError(f"unknown fusion block {name!r}; valid: {list_fusion_blocks()}") from None


def create_fusion_block(name: str, spec: FusionSpec, **kwargs: Any) -> FusionBlock:
    """Build block ``name`` for ``spec``; ``kwargs`` are :class:`FusionConfig` fields the
    block reads (another is refused, see :func:`check_block_options`)."""
    cls = get_fusion_block_class(name)
    unknown = sorted(set(kwargs) - set(FusionConfig.field_names()) - {"name"})
    if unknown:
        raise ConfigError(f"unknown fusion option(s) {unknown}; valid: {list(FusionConfig.field_names())}")
    cfg = FusionConfig(**{**kwargs, "name": name})
    check_block_options(name, kwargs, cls.options)
    return cls(spec, cfg)
