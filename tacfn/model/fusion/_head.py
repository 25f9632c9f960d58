"""The paper's classifier: pool each modality, concatenate, one Linear layer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .._spec import FusionSpec, ModalitySpec
from ._layers import check_shape, to_positions


class ModalityPool(nn.Module):
    """Reduce one modality's (B, C, *positions) features to (B, modality.head_features).

    ``head_pool="mean"`` averages over every position (the paper's video, 2048);
    ``"flatten"`` keeps every position, channel-major, followed by dropout (the paper's
    audio, 64 x 26 = 1664 with dropout 0.4).
    """

    def __init__(self, modality: ModalitySpec, head_dropout: float) -> None:
        super().__init__()
        self.modality = modality
        self.dropout = nn.Dropout(head_dropout) if modality.head_pool == "flatten" else None

    def forward(self, x: Tensor, alpha: Tensor | None = None, residual: bool = True) -> Tensor:
        """Pool ``x``, or ``x * alpha + x`` (``x * alpha`` without ``residual``).

        ``alpha`` (B, *positions) weighs each position. Mean pooling never builds the
        reinforced features: their mean is ``mean(x) + (x @ alpha) / P``, one pass over
        ``x`` instead of four (for the paper's video, 16 x 2048 x 98 floats a batch).
        """
        check_shape(x, self.modality)
        if alpha is not None and self.dropout is None:
            positions = to_positions(x, self.modality)  # (B, P, C), contiguous for channels-last features
            weights = alpha.reshape(len(x), 1, -1) / positions.shape[1]
            weighted = torch.bmm(weights, positions).squeeze(1)  # a row vector times a matrix: one pass
            return weighted + positions.mean(dim=1) if residual else weighted
        if alpha is not None:
            reinforced = x * alpha.unsqueeze(1)
            x = reinforced + x if residual else reinforced
        if self.dropout is None:
            return x.flatten(2).mean(dim=2)
        return self.dropout(x.flatten(1))


def attended_summary(x: Tensor, alpha: Tensor, modality: ModalitySpec) -> Tensor:
    """``sum_p alpha_p x_p`` per time step of a grid (averaged over time) or over a
    sequence's steps: (B, C), the target as the weights select it, at full scale."""
    positions = to_positions(x, modality)  # (B, P, C)
    groups = alpha.shape[1] if modality.kind == "grid" else 1  # alpha sums to 1 per group
    weights = alpha.reshape(len(x), 1, -1) / groups
    return torch.bmm(weights, positions).squeeze(1)


class PooledConcatHead(nn.Module):
    """Pool each modality (:class:`ModalityPool`), concatenate in spec order, one Linear.

    Returns logits (B, *spec.out_shape). The paper: 2048 + 1664 = 3712 -> 8.

    ``separate`` names target modalities whose attended summary (:func:`attended_summary`)
    enters the classifier as its own C features, beside the modality's plain pooling (with
    ``residual``) or instead of it: TACFN's ``attended_pool="separate"``. Elsewhere a
    reinforced modality is pooled as the paper does (:meth:`ModalityPool.forward`).
    """

    def __init__(self, spec: FusionSpec, head_dropout: float, *, separate: Iterable[str] = (),
                 residual: bool = True) -> None:
        super().__init__()
        self.names = spec.names
        self.out_shape = spec.out_shape
        self.separate = tuple(separate)
        self.pools = nn.ModuleDict({m.name: ModalityPool(m, head_dropout) for m in spec.modalities})
        width = sum(
            (m.head_features if residual or m.name not in self.separate else 0)
            + (m.channels if m.name in self.separate else 0)
            for m in spec.modalities
        )
        self.fc = nn.Linear(width, spec.num_outputs)

    def forward(self, features: dict[str, Tensor], alphas: Mapping[str, Tensor] | None = None,
                residual: bool = True) -> Tensor:
        """Logits from ``features``; a modality in ``alphas`` is pooled reinforced (see
        :meth:`ModalityPool.forward`), or beside its attended summary if it is ``separate``."""
        alphas = alphas or {}
        pooled = []
        for name in self.names:
            x, alpha = features[name], alphas.get(name)
            if name in self.separate and alpha is not None:
                if residual:
                    pooled.append(self.pools[name](x))
                pool = self.pools[name]
                assert isinstance(pool, ModalityPool)
                pooled.append(attended_summary(x, alpha, pool.modality))
            else:
                pooled.append(self.pools[name](x, alpha, residual))
        return self.fc(torch.cat(pooled, dim=1)).view(-1, *self.out_shape)
