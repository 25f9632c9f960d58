"""Multi-head attention for the fusion transformers, self- or cross-modal.

The parameters are those of :class:`torch.nn.MultiheadAttention` (``in_proj_weight``
(3d, d), ``in_proj_bias``, ``out_proj``), with the same initialisation and state-dict
keys, so checkpoints written with either load into the other. What differs is the
computation on a CPU. The fusion blocks attend over a few dozen steps with heads 8 wide,
and there ``nn.MultiheadAttention`` spends more time than the arithmetic needs: argument
checks, the scaled-dot-product dispatcher's fully-masked-row guard, and, with no dropout,
a fused CPU kernel that is slower than two batched matmuls at these sizes. On a CPU this
module computes ``softmax(Q K^T / sqrt(head_dim) + mask) V`` with :func:`torch.bmm`; on
a GPU it calls :func:`torch.nn.functional.scaled_dot_product_attention`, whose fused
kernels are the fast path there.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiHeadAttention(nn.Module):
    """Attention of ``x`` (B, L, d) to itself, or to ``source`` (B, L_s, d); returns (B, L, d).

    ``mask`` (L, L_s) is True where a query may NOT attend, as
    :func:`~tacfn.model.fusion._layers.causal_mask` builds it; every query must see at
    least one key. ``dropout`` applies to the attention weights in training.
    """

    def __init__(self, d: int, heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if heads < 1 or d % heads:
            raise ValueError(f"`heads` must divide `d`, but got heads={heads}, d={d}")
        self.d, self.heads, self.dropout = d, heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        # nn.MultiheadAttention's initialisation, in its order of random draws.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor, source: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        batch, length, d = x.shape
        if source is None:
            q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            q = F.linear(x, self.in_proj_weight[:d], self.in_proj_bias[:d])
            k, v = F.linear(source, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)
        dropout = self.dropout if self.training else 0.0
        out = attend(self._heads(q), self._heads(k), self._heads(v), mask, dropout, fused=x.is_cuda)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, d))

    def _heads(self, t: Tensor) -> Tensor:
        """(B, L, d) as (B, heads, L, head_dim), a view."""
        batch, length, _ = t.shape
        return t.view(batch, length, self.heads, self.d // self.heads).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"d={self.d}, heads={self.heads}, dropout={self.dropout}"


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, *, fused: bool) -> Tensor:
    """Scaled dot-product attention of (B, h, L, e) queries to (B, h, L_s, e) keys and values.

    ``fused`` calls PyTorch's fused kernels (for GPUs); otherwise three batched matmul-sized
    steps, which are faster on a CPU at the fusion blocks' sizes. Returns (B, h, L, e).
    """
    if fused:
        keep = None if mask is None else ~mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
    batch, heads, length, width = q.shape
    q = q.reshape(batch * heads, length, width) * (1.0 / math.sqrt(width))
    scores = torch.bmm(q, k.reshape(batch * heads, -1, width).transpose(1, 2))
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = F.dropout(torch.softmax(scores, dim=-1), dropout, training=dropout > 0)
    return torch.bmm(weights, v.reshape(batch * heads, -1, width)).view(batch, heads, length, width)
