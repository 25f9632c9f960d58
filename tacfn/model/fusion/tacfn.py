"""``tacfn``: TACFN's adaptive cross-modal block (Liu et al., "TACFN: Transformer-based
Adaptive Cross-modal Fusion Network for Multimodal Emotion Recognition", 2023).

The paper's block lets audio reinforce video in three steps:

1. Intra-modal selection: a transformer encoder over the audio sequence; its last time
   step ``a`` (B, d) summarises the audio.
2. Fused weight: for every video position p, ``e_p = w . tanh(W_v v_p + b_v + W_a a)``,
   and ``alpha`` is the softmax of ``e`` over the H*W spatial positions of each time step.
3. Reinforcement: ``v' = v * alpha + v``; the audio passes on unchanged.

Then the pooled-concat classifier. Here any (source, target) pairs from
``cfg.direction`` are allowed, and each part is a switch (see :class:`FusionConfig`).
"""

from __future__ import annotations

from torch import Tensor, nn

from .._spec import FusionSpec, ModalitySpec
from ._config import FusionConfig, resolve_direction
from ._head import PooledConcatHead
from ._layers import TransformerEncoder, to_positions
from ._registry import FusionBlock, register_fusion_block


class IntraModalSelection(nn.Module):
    """Summarise a source modality as one vector (B, d).

    Positions (see :func:`to_positions`) are projected to d by a Linear layer when the
    modality has another width (identity otherwise, as for the paper's 64-d audio), then
    ``cfg.selection``: ``"transformer"`` takes the last time step of a
    :class:`TransformerEncoder` (``cfg.layers``, ``cfg.heads``, dropouts, ``cfg.causal``),
    ``"mean"`` averages the positions and ``"none"`` takes the last position.
    """

    def __init__(self, modality: ModalitySpec, cfg: FusionConfig) -> None:
        super().__init__()
        self.modality = modality
        self.selection = cfg.selection
        self.proj = nn.Linear(modality.channels, cfg.d) if modality.channels != cfg.d else nn.Identity()
        self.encoder = None
        if cfg.selection == "transformer":
            self.encoder = TransformerEncoder(
                cfg.d, cfg.heads, cfg.layers, attn_dropout=cfg.attn_dropout,
                relu_dropout=cfg.relu_dropout, res_dropout=cfg.res_dropout,
                embed_dropout=cfg.embed_dropout, causal=cfg.causal,
            )

    def forward(self, x: Tensor) -> Tensor:
        seq = self.proj(to_positions(x, self.modality))
        if self.selection == "mean":
            return seq.mean(dim=1)
        if self.encoder is not None:
            seq = self.encoder(seq)
        return seq[:, -1]


class FusedWeight(nn.Module):
    """Attention weights ``alpha`` over a target's positions.

    ``e_p = w . tanh(W_t t_p + b_t + sum_s W_s s)`` for every target position p, with one
    bias-free ``W_s`` (d -> d) per source summary s; ``num_sources=0`` gives
    ``e_p = w . tanh(W_t t_p + b_t)``, weights that see the target only. ``alpha`` is the
    softmax of ``e`` over the H*W spatial positions of each time step of a grid, or over
    the L steps of a sequence. Returns alpha of shape (B, T, H, W) or (B, L).

    ``w``'s bias is kept for fidelity to the paper (W_v 2048->64, W_a 64->64, w 64->1 with
    bias); the softmax cancels it, so it never receives a gradient.
    """

    def __init__(self, target: ModalitySpec, num_sources: int, d: int) -> None:
        super().__init__()
        self.target = target
        self.target_proj = nn.Linear(target.channels, d)
        self.source_projs = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(num_sources))
        self.score = nn.Linear(d, 1)

    def forward(self, x: Tensor, summaries: list[Tensor]) -> Tensor:
        hidden = self.target_proj(to_positions(x, self.target))  # (B, P, d)
        for proj, summary in zip(self.source_projs, summaries, strict=True):
            hidden = hidden + proj(summary).unsqueeze(1)
        scores = self.score(hidden.tanh()).squeeze(-1)  # (B, P)
        groups = self.target.shape[1] if self.target.kind == "grid" else 1  # time steps of a grid
        alpha = scores.view(scores.shape[0], groups, -1).softmax(dim=-1)
        return alpha.view(-1, *self.target.shape[1:])


@register_fusion_block("tacfn")
class TACFNFusion(FusionBlock):
    """TACFN's adaptive cross-modal block, then the pooled-concat classifier.

    For every target modality in ``cfg.direction``: its sources are summarised
    (:class:`IntraModalSelection`, from the encoder features, never from another target's
    reinforced ones), weights ``alpha`` over its positions come from :class:`FusedWeight`,
    and the target becomes ``t * alpha + t`` (``cfg.residual``) or ``t * alpha``.
    Modalities that are no target pass unchanged.

    Switches: ``cfg.selection`` picks the summary; ``cfg.fused_weight=False`` makes
    ``alpha`` depend on the target alone (no source summary enters the weights, so the
    sources play no part and no selection module is built).

    Unlike the released code, which sums ``alpha`` over the batch and applies that sum to
    every sample (so a sample's output depends on its batch-mates), ``alpha`` is computed
    per sample, in one batched expression. ``last_alpha`` holds the last forward's
    weights per target, detached, for inspection.
    """

    options = ("d", "heads", "layers", "attn_dropout", "relu_dropout", "res_dropout", "embed_dropout",
               "head_dropout", "causal", "selection", "fused_weight", "residual", "direction", "attended_pool")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        pairs = resolve_direction(cfg.direction, spec.names)
        self.residual = cfg.residual
        self.sources = {
            target: [s for s, t in pairs if t == target] if cfg.fused_weight else []
            for target in spec.names if any(t == target for _, t in pairs)
        }
        used_sources = [name for name in spec.names if any(name in s for s in self.sources.values())]
        self.selection = nn.ModuleDict({name: IntraModalSelection(spec[name], cfg) for name in used_sources})
        self.weights = nn.ModuleDict({
            target: FusedWeight(spec[target], len(sources), cfg.d) for target, sources in self.sources.items()
        })
        separate = tuple(self.sources) if cfg.attended_pool == "separate" else ()
        self.head = PooledConcatHead(spec, cfg.head_dropout, separate=separate, residual=cfg.residual)
        self.last_alpha: dict[str, Tensor] = {}

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        summaries = {name: select(features[name]) for name, select in self.selection.items()}
        alphas = {}
        for target, sources in self.sources.items():
            alphas[target] = self.weights[target](features[target], [summaries[s] for s in sources])
            self.last_alpha[target] = alphas[target].detach()
        return self.head(features, alphas, self.residual)  # pools t * alpha (+ t) per target
