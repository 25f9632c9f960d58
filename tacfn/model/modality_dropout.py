"""Modality dropout: zero a whole modality per sample at train time.

The network then learns not to lean on one modality alone, and evaluation with a
modality missing (zeroed for every sample) measures what each modality contributes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn


class ModalityDropout(nn.Module):
    """Zero each modality's features independently per sample with probability ``p[name]``.

    Active only in training mode. Samples may lose every modality at once; with the
    small rates used in practice that is rare, and it keeps the rates exactly as stated.
    """

    def __init__(self, p: Mapping[str, float]) -> None:
        super().__init__()
        for name, rate in p.items():
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"`0 <= modality_dropout[{name!r}] < 1` must hold, but got {rate}")
        self.p = {name: float(rate) for name, rate in p.items() if rate > 0}

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        if not self.training or not self.p:
            return features
        out = dict(features)
        for name, rate in self.p.items():
            x = features[name]
            keep = torch.rand(x.shape[0], device=x.device) >= rate
            out[name] = x * keep.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
        return out

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_modalities(features: dict[str, Tensor], missing: Iterable[str]) -> dict[str, Tensor]:
    """Zero the named modalities for every sample (evaluation with a modality missing)."""
    missing = tuple(missing)
    unknown = sorted(set(missing) - set(features))
    if unknown:
        raise ValueError(f"cannot drop unknown modality {unknown}; this model has {sorted(features)}")
    return {name: torch.zeros_like(x) if name in missing else x for name, x in features.items()}
