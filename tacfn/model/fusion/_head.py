"""The paper's classifier: pool each modality, concatenate, one Linear layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._spec import FusionSpec, ModalitySpec
from ._layers import check_shape


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

    def forward(self, x: Tensor) -> Tensor:
        check_shape(x, self.modality)
        if self.dropout is None:
            return x.flatten(2).mean(dim=2)
        return self.dropout(x.flatten(1))


class PooledConcatHead(nn.Module):
    """Pool each modality (:class:`ModalityPool`), concatenate in spec order, one Linear.

    Returns logits (B, *spec.out_shape). The paper: 2048 + 1664 = 3712 -> 8.
    """

    def __init__(self, spec: FusionSpec, head_dropout: float) -> None:
        super().__init__()
        self.names = spec.names
        self.out_shape = spec.out_shape
        self.pools = nn.ModuleDict({m.name: ModalityPool(m, head_dropout) for m in spec.modalities})
        self.fc = nn.Linear(sum(m.head_features for m in spec.modalities), spec.num_outputs)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        pooled = [self.pools[name](features[name]) for name in self.names]
        return self.fc(torch.cat(pooled, dim=1)).view(-1, *self.out_shape)
