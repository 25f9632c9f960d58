"""``lmf``: Low-rank Multimodal Fusion (Liu et al., "Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors", ACL 2018; public code: github.com/Justin1904/Low-rank-Multimodal-Fusion).

TFN's fused tensor times a weight tensor, computed without building either: the weight is a
sum of ``cfg.rank`` rank-one terms, each a product of modality-specific factors. Each modality
is pooled to a vector z_m as the pooled-concat classifier pools it, extended by a constant 1,
and multiplied by its ``rank`` factors W_m^(i) of shape (len(z_m) + 1, dim). The results are
multiplied elementwise across modalities and summed over the rank with learned weights, plus
a bias::

    h = sum_i w_i * prod_m ([z_m, 1] @ W_m^(i)) + b        (dim wide)

as in the public code (factors and rank weights Xavier-normal, bias zero). A ReLU and a Linear
layer turn h into the logits. The paper's unimodal subnetworks are left out (the encoders come
before the block). A modality that modality dropout zeroes contributes only its factors' last
row, the term of its 1.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import ModalityPool
from ._registry import FusionBlock, register_fusion_block


@register_fusion_block("lmf")
class LowRankFusion(FusionBlock):
    """Rank-``rank`` modality-specific factors, fused to ``dim`` features, then a classifier."""

    options = ("dim", "head_dropout", "rank")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        self.spec = spec
        self.pools = nn.ModuleDict({m.name: ModalityPool(m, cfg.head_dropout) for m in spec.modalities})
        self.factors = nn.ParameterDict({
            m.name: nn.Parameter(nn.init.xavier_normal_(torch.empty(cfg.rank, m.head_features + 1, cfg.dim)))
            for m in spec.modalities
        })
        self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, cfg.rank)))
        self.bias = nn.Parameter(torch.zeros(cfg.dim))
        self.fc = nn.Linear(cfg.dim, spec.num_outputs)

    def fuse(self, features: dict[str, Tensor]) -> Tensor:
        """The fused vector h (B, dim) of the formula above."""
        product: Tensor | None = None
        for m in self.spec.modalities:
            z = self.pools[m.name](features[m.name])
            z = torch.cat([z, z.new_ones(len(z), 1)], dim=1)
            term = torch.einsum("bf,rfo->bro", z, self.factors[m.name])  # (B, rank, dim)
            product = term if product is None else product * term
        assert product is not None
        return torch.einsum("r,bro->bo", self.rank_weights[0], product) + self.bias

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.fc(torch.relu(self.fuse(features))).view(-1, *self.spec.out_shape)
