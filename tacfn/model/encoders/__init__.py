"""Unimodal encoders: each maps one modality's input to channels-first features.

Every encoder has ``output_shape(input_shape)``, the per-sample output shape computed
without a forward pass, so a model can size its fusion block at construction.
"""

from .audio import MfccCnn
from .sequence import SequenceProjection
from .video import LiteVideoEncoder, ResNeXt3D

__all__ = ["LiteVideoEncoder", "MfccCnn", "ResNeXt3D", "SequenceProjection"]
