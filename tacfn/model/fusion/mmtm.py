"""``mmtm``: the Multimodal Transfer Module (Joze et al., "MMTM: Multimodal Transfer Module
for CNN Fusion", CVPR 2020; public code: github.com/haamoon/mmtm).

Squeeze and excitation across modalities: each modality's features are averaged over their
positions (B, C_m), the squeezes are concatenated and mapped by a Linear layer and a ReLU to a
joint vector Z of width sum(C_m) // ``reduction``, and from Z one Linear layer per modality
gives that modality's excitation E_m (C_m wide). Each channel of modality m is scaled by
2 * sigmoid(E_m), in (0, 2): a modality can damp or amplify another's channels, and a gate of
1 leaves them as they were. The gated features go to the paper's pooled-concat classifier.

Departures: MMTM sits between the layers of two CNN streams, several times; here one module
sits after the encoders, for any number of modalities, and the classifier follows it. The
public code gates with sigmoid (at most 1) and sizes Z as int(2 * sum(C_m) / ratio) with ratio
4, half the channels, which ``reduction: 2`` reproduces; the gate here is the paper's
2 * sigmoid. A modality that modality dropout zeroes squeezes to zeros: its features stay zero,
and the others' gates see only that it is missing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .._spec import FusionSpec
from ._config import FusionConfig
from ._head import PooledConcatHead
from ._layers import check_shape
from ._registry import FusionBlock, register_fusion_block, require_two_modalities


@register_fusion_block("mmtm")
class MultimodalTransferFusion(FusionBlock):
    """A joint squeeze of all modalities gates each modality's channels, then the classifier."""

    options = ("head_dropout", "reduction")

    def __init__(self, spec: FusionSpec, cfg: FusionConfig) -> None:
        super().__init__()
        require_two_modalities("mmtm", spec)
        channels = sum(m.channels for m in spec.modalities)
        joint = channels // cfg.reduction
        if joint < 1:
            raise ConfigError(
                f"fusion block 'mmtm': reduction={cfg.reduction} leaves the joint squeeze no channels "
                f"(the modalities have {channels} channels in all); valid: 1..{channels}"
            )
        self.spec = spec
        self.squeeze = nn.Sequential(nn.Linear(channels, joint), nn.ReLU())
        self.excite = nn.ModuleDict({m.name: nn.Linear(joint, m.channels) for m in spec.modalities})
        self.head = PooledConcatHead(spec, cfg.head_dropout)

    def gates(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each modality's channel gates (B, C_m), in (0, 2)."""
        squeezes = []
        for m in self.spec.modalities:
            check_shape(features[m.name], m)
            squeezes.append(features[m.name].flatten(2).mean(dim=2))
        z = self.squeeze(torch.cat(squeezes, dim=1))
        return {name: 2 * torch.sigmoid(excite(z)) for name, excite in self.excite.items()}

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        gated = {}
        for name, gate in self.gates(features).items():
            x = features[name]
            gated[name] = x * gate.view(*gate.shape, *[1] * (x.dim() - 2))
        return self.head(gated)
