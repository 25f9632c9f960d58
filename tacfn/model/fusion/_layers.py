"""Building blocks shared by the fusion blocks: feature reshaping and transformer encoders.

The encoders follow fairseq / MulT (Tsai et al. 2019), which TACFN's released code reuses:
inputs scaled by sqrt(d) plus sinusoidal positions, embedding dropout, pre-LayerNorm layers
of multi-head attention and a ReLU feed-forward network of width 4d, and a final LayerNorm.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._spec import ModalitySpec
from ._attention import MultiHeadAttention


def check_shape(x: Tensor, modality: ModalitySpec) -> None:
    """Raise when ``x`` is not (B, *modality.shape): the encoder and the spec disagree."""
    if x.dim() != len(modality.shape) + 1 or tuple(x.shape[1:]) != modality.shape:
        raise ValueError(
            f"features of {modality.name!r} must have shape (B, {', '.join(map(str, modality.shape))}), "
            f"but got {tuple(x.shape)}"
        )


def to_positions(x: Tensor, modality: ModalitySpec) -> Tensor:
    """Channels-first features (B, C, *positions) as a sequence (B, P, C).

    A grid's T*H*W positions come in (t, h, w) order; a sequence's L steps in order.
    """
    check_shape(x, modality)
    return x.flatten(2).transpose(1, 2)


def sinusoidal_positions(length: int, dim: int, *, device: torch.device | None = None,
                         dtype: torch.dtype | None = None) -> Tensor:
    """Fairseq's sinusoidal position table (length, dim): sines then cosines.

    Positions count from 1, as fairseq's do for unpadded input. An odd ``dim`` gets a
    zero last column.
    """
    half = dim // 2
    rate = math.log(10_000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -rate)
    angles = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None] * freqs[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        table = nn.functional.pad(table, (0, 1))
    return table.to(dtype or torch.get_default_dtype())


def causal_mask(query_len: int, key_len: int, device: torch.device | None = None) -> Tensor:
    """Boolean mask (query_len, key_len), True where a query may NOT attend.

    Query step i covers the first (i+1)/query_len of the clip and sees the key steps that
    start before that point. For equal lengths this is the usual upper-triangular mask;
    for unaligned sequences it lines both up in time. Key step 0 is always visible.
    """
    i = torch.arange(query_len, device=device)[:, None]
    j = torch.arange(key_len, device=device)[None, :]
    return j * query_len >= (i + 1) * key_len


class EncoderLayer(nn.Module):
    """One pre-LayerNorm layer: x + Attn(LN(x)), then x + FFN(LN(x)).

    With ``cross_modal`` the queries come from ``x`` and the keys/values from ``source``,
    which gets its own LayerNorm.
    """

    def __init__(self, d: int, heads: int, *, attn_dropout: float = 0.0, relu_dropout: float = 0.0,
                 res_dropout: float = 0.0, cross_modal: bool = False) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d)
        self.norm_source = nn.LayerNorm(d) if cross_modal else None
        self.attn = MultiHeadAttention(d, heads, dropout=attn_dropout)
        self.norm_ffn = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.relu_dropout = nn.Dropout(relu_dropout)
        self.res_dropout = nn.Dropout(res_dropout)
        for fc in (self.fc1, self.fc2):  # fairseq's Linear init, as in MulT
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor, source: Tensor | None = None, attn_mask: Tensor | None = None) -> Tensor:
        source = None if self.norm_source is None else self.norm_source(source)
        attended = self.attn(self.norm_attn(x), source, mask=attn_mask)
        x = x + self.res_dropout(attended)
        hidden = self.relu_dropout(torch.relu(self.fc1(self.norm_ffn(x))))
        return x + self.res_dropout(self.fc2(hidden))


class TransformerEncoder(nn.Module):
    """A stack of pre-LayerNorm layers over (B, L, d) sequences, fairseq / MulT style.

    ``cross_modal=False``: self-attention; ``forward(x)``. ``cross_modal=True``: the target
    ``x`` attends to ``source`` (B, L_s, d), which is scaled and positioned the same way;
    ``forward(x, source)``. ``causal`` masks attention to later steps (see
    :func:`causal_mask`). Returns (B, L, d).
    """

    def __init__(self, d: int, heads: int, layers: int, *, attn_dropout: float = 0.0,
                 relu_dropout: float = 0.0, res_dropout: float = 0.0, embed_dropout: float = 0.0,
                 causal: bool = False, cross_modal: bool = False) -> None:
        super().__init__()
        if heads < 1 or d % heads:
            raise ValueError(f"`heads` must divide `d`, but got heads={heads}, d={d}")
        self.d = d
        self.causal = causal
        self.cross_modal = cross_modal
        self.embed_dropout = nn.Dropout(embed_dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(d, heads, attn_dropout=attn_dropout, relu_dropout=relu_dropout,
                         res_dropout=res_dropout, cross_modal=cross_modal)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d)

    def _embed(self, x: Tensor) -> Tensor:
        positions = sinusoidal_positions(x.shape[1], self.d, device=x.device, dtype=x.dtype)
        return self.embed_dropout(math.sqrt(self.d) * x + positions)

    def forward(self, x: Tensor, source: Tensor | None = None) -> Tensor:
        if self.cross_modal != (source is not None):
            raise ValueError(
                f"a {'cross-modal' if self.cross_modal else 'self-attention'} encoder "
                f"{'needs' if self.cross_modal else 'takes no'} `source`"
            )
        x = self._embed(x)
        if source is not None:
            source = self._embed(source)
        key_len = x.shape[1] if source is None else source.shape[1]
        mask = causal_mask(x.shape[1], key_len, device=x.device) if self.causal else None
        for layer in self.layers:
            x = layer(x, source, attn_mask=mask)
        return self.norm(x)
