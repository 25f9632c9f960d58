"""Late fusion: one classifier per modality, their outputs combined.

``late_average`` averages the per-modality logits. ``late_product`` multiplies the
per-modality class probabilities: it returns the sum of their log-softmax over the class
dimension (the last one), whose softmax is the normalised product. Only ``head_dropout``
of the config applies.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import PooledConcatHead
from ._registry import FusionBlock, register_fusion_block


class _LateFusion(FusionBlock):
    """One :class:`PooledConcatHead` per modality; subclasses say how to combine them."""

    options = ("head_dropout",)

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        self.classifiers = nn.ModuleDict({
            m.name: PooledConcatHead(FusionSpec((m,), spec.out_shape), cfg.head_dropout)
            for m in spec.modalities
        })

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        logits = torch.stack([head(features) for head in self.classifiers.values()])
        return self.combine(logits)

    def combine(self, logits: Tensor) -> Tensor:
        """(M, B, *out_shape) per-modality logits -> (B, *out_shape)."""
        raise NotImplementedError


@register_fusion_block("late_average")
class LateAverageFusion(_LateFusion):
    """Average of the per-modality logits."""

    def combine(self, logits: Tensor) -> Tensor:
        return logits.mean(dim=0)


@register_fusion_block("late_product")
class LateProductFusion(_LateFusion):
    """Product of the per-modality probabilities, as logits (sum of log-softmax)."""

    def combine(self, logits: Tensor) -> Tensor:
        return logits.log_softmax(dim=-1).sum(dim=0)
