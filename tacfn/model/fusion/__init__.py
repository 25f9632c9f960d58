"""Fusion blocks, built by name from one registry."""

from ._config import FusionConfig, resolve_direction, valid_heads
from ._registry import FusionBlock, create_fusion_block, get_fusion_block_class, list_fusion_blocks, register_fusion_block

# Importing the block modules registers them.
from . import concat, late, lmf, mcbp, mmtm, msaf, mult, tacfn, tfn  # noqa: E402,F401  isort:skip

__all__ = [
    "FusionBlock",
    "FusionConfig",
    "create_fusion_block",
    "get_fusion_block_class",
    "list_fusion_blocks",
    "register_fusion_block",
    "resolve_direction",
    "valid_heads",
]
