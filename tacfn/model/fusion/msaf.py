"""``msaf``: Multimodal Split Attention Fusion (Su, Hu et al., "MSAF: Multimodal Split
Attention Fusion", 2020; public code: github.com/anita-hu/MSAF, which also holds its RAVDESS
experiments).

Each modality's channels are split into blocks of ``dim`` channels (the last block of a
modality whose channel count is not a multiple of ``dim`` is padded with zero channels). Every
block is squeezed by a mean over its positions and the squeezes of all blocks of all
modalities are summed, (B, dim). A Linear layer to ``dim // reduction`` channels and a ReLU
give the joint representation; one Linear layer per block maps it to ``dim`` channel logits, and a
softmax across all blocks of all modalities, per channel, splits the attention: channel c of
every block competes with channel c of every other block. Each block's channels are scaled by
their attention (the padding dropped) and the re-weighted features go to the paper's
pooled-concat classifier.

Departures: MSAF sits between the layers of the unimodal networks; here one module sits after
the encoders. The public code normalises the joint representation with BatchNorm, which makes
a sample's prediction depend on its batch-mates; here there is no normalisation: at inference
BatchNorm is an affine map that the Linear layer before it already covers, and a LayerNorm
would change the function (on a one-channel joint representation it would erase the input).
The per-block Linear layers are computed as one Linear layer to blocks * ``dim`` outputs (the
same parameters). The public code's block dropout and lowest-attention floor are left out. A
modality that modality dropout zeroes still receives attention (from the others' squeezes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import PooledConcatHead
from ._layers import check_shape
from ._registry import FusionBlock, register_fusion_block, require_two_modalities


@register_fusion_block("msaf")
class SplitAttentionFusion(FusionBlock):
    """Channel blocks of all modalities compete in a softmax per channel, then the classifier."""

    options = ("dim", "head_dropout", "reduction")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        require_two_modalities("msaf", spec)
        joint = cfg.dim // cfg.reduction
        if joint < 1:
            raise ConfigError(
                f"fusion block 'msaf': dim={cfg.dim} // reduction={cfg.reduction} leaves the joint "
                f"representation no channels; valid: reduction 1..{cfg.dim}"
            )
        self.spec = spec
        self.dim = cfg.dim
        self.blocks = [math.ceil(m.channels / cfg.dim) for m in spec.modalities]
        self.joint = nn.Sequential(nn.Linear(cfg.dim, joint), nn.ReLU())
        self.logits = nn.Linear(joint, sum(self.blocks) * cfg.dim)
        self.head = PooledConcatHead(spec, cfg.head_dropout)

    def _split(self, x: Tensor, blocks: int) -> Tensor:
        """(B, C, *positions) -> (B, blocks, dim, P), zero channels padding the last block."""
        x = x.flatten(2)
        x = nn.functional.pad(x, (0, 0, 0, blocks * self.dim - x.shape[1]))
        return x.reshape(len(x), blocks, self.dim, -1)

    def attention(self, features: dict[str, Tensor]) -> Tensor:
        """Attention (B, blocks of all modalities, dim), summing to 1 over the blocks per channel."""
        squeezes = []
        for m, blocks in zip(self.spec.modalities, self.blocks):
            check_shape(features[m.name], m)
            squeezes.append(self._split(features[m.name], blocks).mean(dim=3).sum(dim=1))
        squeeze = torch.stack(squeezes).sum(dim=0)
        logits = self.logits(self.joint(squeeze)).view(len(squeeze), -1, self.dim)
        return logits.softmax(dim=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        weighted = {}
        attention = self.attention(features).split(self.blocks, dim=1)
        for m, blocks, weights in zip(self.spec.modalities, self.blocks, attention):
            x = features[m.name]
            scaled = self._split(x, blocks) * weights.unsqueeze(3)
            weighted[m.name] = scaled.flatten(1, 2)[:, : m.channels].reshape(x.shape)
        return self.head(weighted)
