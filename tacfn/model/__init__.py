"""The TACFN network in PyTorch: encoders, fusion blocks (a registry) and presets."""

from ._spec import FusionSpec, ModalitySpec
from .fusion import FusionConfig, create_fusion_block, list_fusion_blocks, register_fusion_block
from .modality_dropout import ModalityDropout, drop_modalities
from .tacfn import (
    BACKBONE_MODES,
    TACFN,
    ModalityConfig,
    TACFNConfig,
    configure,
    create_model,
    list_presets,
    preset_config,
    tacfn_iemocap,
    tacfn_lite,
    tacfn_paper,
)

__all__ = [
    "BACKBONE_MODES",
    "TACFN",
    "FusionConfig",
    "FusionSpec",
    "ModalityConfig",
    "ModalityDropout",
    "ModalitySpec",
    "TACFNConfig",
    "configure",
    "create_fusion_block",
    "create_model",
    "drop_modalities",
    "list_fusion_blocks",
    "list_presets",
    "preset_config",
    "register_fusion_block",
    "tacfn_iemocap",
    "tacfn_lite",
    "tacfn_paper",
]
