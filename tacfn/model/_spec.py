"""What a fusion block is told about the features it receives.

Encoders produce one feature tensor per modality, channels first:
- ``grid`` features: (B, C, T, H, W), e.g. the video trunk's (B, 2048, 2, 7, 7);
- ``sequence`` features: (B, C, L), e.g. the MFCC trunk's (B, 64, 26).

Fusion blocks are built from a :class:`FusionSpec` so they never need to run an encoder
to learn its output shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ModalityKind = Literal["grid", "sequence"]
HeadPool = Literal["mean", "flatten"]


@dataclass(frozen=True)
class ModalitySpec:
    """Shape of one modality's encoder output, per sample.

    ``shape`` excludes the batch: (C, T, H, W) for a grid, (C, L) for a sequence.
    ``head_pool`` says how the classifier reduces it: ``mean`` averages every position
    (the paper's video), ``flatten`` keeps every position (the paper's audio, 64 x 26).
    """

    name: str
    kind: ModalityKind
    shape: tuple[int, ...]
    head_pool: HeadPool = "mean"

    def __post_init__(self) -> None:
        expected = 4 if self.kind == "grid" else 2
        if len(self.shape) != expected:
            raise ValueError(
                f"a {self.kind} modality needs a shape of {expected} dims (channels first), "
                f"but {self.name!r} got {self.shape}"
            )

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def positions(self) -> int:
        """Number of feature positions (T*H*W for a grid, L for a sequence)."""
        return math.prod(self.shape[1:])

    @property
    def head_features(self) -> int:
        """Width this modality contributes to a pooled-concat classifier."""
        return self.channels * (self.positions if self.head_pool == "flatten" else 1)


@dataclass(frozen=True)
class FusionSpec:
    """Everything a fusion block needs to know about its inputs and outputs.

    ``out_shape`` is the per-sample logits shape: ``(num_classes,)`` for RAVDESS,
    ``(num_tasks, num_classes)`` for IEMOCAP's 4 emotions scored as binary tasks.
    """

    modalities: tuple[ModalitySpec, ...]
    out_shape: tuple[int, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)

    @property
    def num_outputs(self) -> int:
        return math.prod(self.out_shape)

    def __getitem__(self, name: str) -> ModalitySpec:
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(f"no modality {name!r}; this model has {list(self.names)}")
