"""``mcbp``: Multimodal Compact Bilinear Pooling (Fukui et al., "Multimodal Compact Bilinear
Pooling for Visual Question Answering and Visual Grounding", EMNLP 2016; public code for the
count sketch and its FFT product: github.com/gdlg/pytorch_compact_bilinear_pooling).

The outer product of the modalities' vectors holds every multiplicative interaction but is
far too wide (64 x 768 on lite, 2048 x 1664 on the paper preset). Its count sketch is not: a
count sketch maps entry i of a vector to position h[i] of a ``sketch_dim``-wide vector with
sign s[i], and the sketch of an outer product is the circular convolution of the factors'
sketches (hash h_1[i] + h_2[j] mod sketch_dim, sign s_1[i] s_2[j]), one elementwise product
in the Fourier domain. Each modality is pooled to a vector as the pooled-concat classifier
pools it and sketched with its own fixed random h and s (drawn at construction from torch's
global RNG, so a seed fixes them, and kept as buffers, so a checkpoint restores them). The
rFFTs of all sketches are multiplied and transformed back; then Fukui's signed square root
and L2 normalisation, dropout (``head_dropout``) and a Linear layer to the logits.

Departures: the block pools the encoders' outputs instead of sitting on two feature vectors
of a VQA network, and it multiplies the FFTs of all M modalities (the sketch of the M-way
outer product) where the paper fuses two. The L2 normalisation divides by max(norm, eps), so a
modality that modality dropout zeroes gives a zero vector and finite logits (the bias).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import ModalityPool
from ._registry import FusionBlock, register_fusion_block, require_two_modalities

EPS = 1e-12


@register_fusion_block("mcbp")
class CompactBilinearFusion(FusionBlock):
    """Count sketch of the outer product of the pooled modalities, then a linear classifier."""

    options = ("head_dropout", "sketch_dim")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        require_two_modalities("mcbp", spec)
        self.spec = spec
        self.sketch_dim = cfg.sketch_dim
        self.pools = nn.ModuleDict({m.name: ModalityPool(m, cfg.head_dropout) for m in spec.modalities})
        for m in spec.modalities:
            self.register_buffer(f"hash_{m.name}", torch.randint(cfg.sketch_dim, (m.head_features,)))
            self.register_buffer(f"sign_{m.name}", torch.randint(2, (m.head_features,)) * 2.0 - 1.0)
        self.dropout = nn.Dropout(cfg.head_dropout)
        self.fc = nn.Linear(cfg.sketch_dim, spec.num_outputs)

    def sketch(self, name: str, x: Tensor) -> Tensor:
        """Count sketch (B, sketch_dim) of modality ``name``'s pooled vectors ``x``."""
        out = x.new_zeros(len(x), self.sketch_dim)
        return out.index_add(1, getattr(self, f"hash_{name}"), x * getattr(self, f"sign_{name}"))

    def fuse(self, features: dict[str, Tensor]) -> Tensor:
        """The count sketch (B, sketch_dim) of the flattened outer product of all modalities."""
        spectrum: Tensor | None = None
        for m in self.spec.modalities:
            f = torch.fft.rfft(self.sketch(m.name, self.pools[m.name](features[m.name])), dim=1)
            spectrum = f if spectrum is None else spectrum * f
        assert spectrum is not None
        return torch.fft.irfft(spectrum, n=self.sketch_dim, dim=1)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        fused = self.fuse(features)
        # sqrt(|x| + EPS): a finite gradient where the product is exactly zero (a dropped modality).
        fused = torch.sign(fused) * torch.sqrt(fused.abs() + EPS)
        fused = nn.functional.normalize(fused, dim=1, eps=EPS)
        return self.fc(self.dropout(fused)).view(-1, *self.spec.out_shape)
