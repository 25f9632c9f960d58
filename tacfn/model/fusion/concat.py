"""``concat``: no cross-modal block, the paper's first ablation."""

from __future__ import annotations

from torch import Tensor

from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import PooledConcatHead
from ._registry import FusionBlock, register_fusion_block


@register_fusion_block("concat")
class ConcatFusion(FusionBlock):
    """The encoder features go straight to the pooled-concat classifier.

    This is TACFN with its cross-modal block removed (the released "no fusion block"
    ablation): only ``head_dropout`` of the config applies.
    """

    options = ("head_dropout",)

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        self.head = PooledConcatHead(spec, cfg.head_dropout)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.head(features)
