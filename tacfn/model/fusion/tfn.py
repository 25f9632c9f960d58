"""``tfn``: Tensor Fusion Network (Zadeh et al., "Tensor Fusion Network for Multimodal
Sentiment Analysis", EMNLP 2017; public code: github.com/Justin1904/TensorFusionNetworks).

Each modality is pooled to a vector as the pooled-concat classifier pools it (a mean over
positions, or flattened with ``head_dropout`` for a ``flatten`` modality), projected to
``cfg.dim`` by a bias-free Linear layer and a ReLU, and extended by a constant 1. The outer
product of the extended vectors over all M modalities, flattened, has prod(dim + 1) entries:
thanks to the 1 it holds every unimodal vector, every product of two, ..., and the constant.
Dropout (``head_dropout``) on it, then the paper's post-fusion MLP: two ReLU hidden layers of
width ``cfg.d`` and a Linear layer to the logits.

Departures from the paper: the unimodal subnetworks are one projection each (the encoders
come before the block), the 1 is appended rather than prepended, and the projection has no
bias, so a modality that modality dropout zeroes becomes the zero vector and the fused
tensor keeps exactly the other modalities' terms.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import ModalityPool
from ._registry import FusionBlock, register_fusion_block


@register_fusion_block("tfn")
class TensorFusion(FusionBlock):
    """Outer product of the modalities' ``dim``-wide vectors, each with a 1 appended."""

    options = ("d", "dim", "head_dropout")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        self.spec = spec
        self.pools = nn.ModuleDict({m.name: ModalityPool(m, cfg.head_dropout) for m in spec.modalities})
        self.proj = nn.ModuleDict({
            m.name: nn.Sequential(nn.Linear(m.head_features, cfg.dim, bias=False), nn.ReLU())
            for m in spec.modalities
        })
        self.fused_features = math.prod([cfg.dim + 1] * len(spec.modalities))
        self.dropout = nn.Dropout(cfg.head_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(self.fused_features, cfg.d), nn.ReLU(),
            nn.Linear(cfg.d, cfg.d), nn.ReLU(),
            nn.Linear(cfg.d, spec.num_outputs),
        )

    def vectors(self, features: dict[str, Tensor]) -> list[Tensor]:
        """Each modality's projected vector (B, dim), in spec order, before the 1 is appended."""
        return [self.proj[m.name](self.pools[m.name](features[m.name])) for m in self.spec.modalities]

    def fuse(self, features: dict[str, Tensor]) -> Tensor:
        """The flattened outer product (B, prod(dim + 1)), indexed in spec order (row-major)."""
        fused: Tensor | None = None
        for h in self.vectors(features):
            z = torch.cat([h, h.new_ones(len(h), 1)], dim=1)
            fused = z if fused is None else (fused.unsqueeze(2) * z.unsqueeze(1)).flatten(1)
        assert fused is not None
        return fused

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.dropout(self.fuse(features))).view(-1, *self.spec.out_shape)
