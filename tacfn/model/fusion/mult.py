"""``mult``: a MulT-style cross-modal transformer (Tsai et al., "Multimodal Transformer for
Unaligned Multimodal Language Sequences", ACL 2019).

Every modality becomes a sequence of positions projected to d (a grid's T*H*W positions in
(t, h, w) order). For each target modality and each other modality, a cross-modal
transformer lets the target attend to that source. The target's streams are concatenated
along features and passed through a self-attention transformer, as in MulT; its last time
step summarises the target. The summaries of all targets are concatenated -> Linear ->
logits. MulT's residual output MLP is left out to keep the block lean.

The self-attention transformer is what lets every target position reach the output: a
cross-modal layer's last query step depends only on its own earlier value and the source,
so without it only the target's last position would ever count.

Every ordered pair of modalities is used, so ``cfg.direction`` does not apply; neither do
the TACFN switches (``selection``, ``fused_weight``, ``residual``) nor ``head_dropout``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from .._spec import FusionSpec
from ._config import FusionConfig
from ._layers import TransformerEncoder, to_positions
from ._registry import FusionBlock, register_fusion_block


@register_fusion_block("mult")
class MulTFusion(FusionBlock):
    """Cross-modal transformers into each target, a self-attention transformer per target.

    Each modality is projected to ``cfg.d`` by a bias-free Linear layer (MulT's 1x1
    Conv1d; identity when the width already is d). Every transformer has ``cfg.layers``
    layers, ``cfg.heads`` heads and the config's dropouts; with ``cfg.causal`` each masks
    attention to later steps, lining unaligned sequences up in time. The self-attention
    transformer of a target works at width (M - 1) * d for M modalities.
    """

    options = ("d", "heads", "layers", "attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "causal")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        if len(spec.modalities) < 2:
            raise ValueError(f"the mult block needs at least 2 modalities, but got {list(spec.names)}")
        self.spec = spec
        self.sources = {t: [s for s in spec.names if s != t] for t in spec.names}
        encoder = partial(TransformerEncoder, attn_dropout=cfg.attn_dropout, relu_dropout=cfg.relu_dropout,
                          res_dropout=cfg.res_dropout, embed_dropout=cfg.embed_dropout, causal=cfg.causal)
        width = (len(spec.names) - 1) * cfg.d
        self.proj = nn.ModuleDict({
            m.name: nn.Linear(m.channels, cfg.d, bias=False) if m.channels != cfg.d else nn.Identity()
            for m in spec.modalities
        })
        self.cross = nn.ModuleDict({
            f"{source}_to_{target}": encoder(cfg.d, cfg.heads, cfg.layers, cross_modal=True)
            for target, sources in self.sources.items()
            for source in sources
        })
        self.memory = nn.ModuleDict({
            target: encoder(width, cfg.heads, cfg.layers) for target in spec.names
        })
        self.fc = nn.Linear(len(spec.names) * width, spec.num_outputs)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        seqs = {m.name: self.proj[m.name](to_positions(features[m.name], m)) for m in self.spec.modalities}
        summaries = []
        for target, sources in self.sources.items():
            streams = [self.cross[f"{source}_to_{target}"](seqs[target], seqs[source]) for source in sources]
            summaries.append(self.memory[target](torch.cat(streams, dim=2))[:, -1])
        return self.fc(torch.cat(summaries, dim=1)).view(-1, *self.spec.out_shape)
