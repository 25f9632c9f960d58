"""TACFN: Transformer-based Adaptive Cross-modal Fusion Network.

Paper: "TACFN: Transformer-based Adaptive Cross-modal Fusion Network for Multimodal
Emotion Recognition" (Liu et al., 2023). Unimodal encoders turn each modality into
channels-first features; a fusion block from the registry (``tacfn`` by default) fuses
them and classifies. Presets:

- ``paper``: RAVDESS, 3D ResNeXt-50 on 30 x 224 x 224 face crops and the MFCC CNN on
  13 x 212 MFCCs, 8 emotions; encoders fine-tune (the paper's setting).
- ``lite``: RAVDESS-format, a thin video CNN on 8 x 64 x 64 crops and the MFCC CNN on
  13 x 106 MFCCs at 22.05 kHz; trains in seconds on a CPU (tests, demo).
- ``iemocap``: MulT's unaligned text / audio / vision sequences, each projected by a
  Conv1d to d=30; 4 emotions scored as binary tasks.

``create_model(preset, **overrides)`` builds one; overrides replace a preset's defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from torch import Tensor, nn

from ..data.preprocessing import LITE_PREPROCESS, PAPER_PREPROCESS, PreprocessConfig
from ..errors import ConfigError
from ._spec import FusionSpec, HeadPool, ModalitySpec
from .encoders import LiteVideoEncoder, MfccCnn, ResNeXt3D, SequenceProjection
from .fusion import FusionConfig, get_fusion_block_class, list_fusion_blocks
from .fusion._config import check_block_options
from .modality_dropout import ModalityDropout, drop_modalities

BackboneMode = Literal["finetune", "frozen"]
BACKBONE_MODES: tuple[str, ...] = ("finetune", "frozen")

_ENCODERS: dict[str, type[ResNeXt3D | LiteVideoEncoder | MfccCnn | SequenceProjection]] = {
    "resnext3d50": ResNeXt3D,
    "lite3d": LiteVideoEncoder,
    "mfcc_cnn": MfccCnn,
    "seq_proj": SequenceProjection,
}


@dataclass(frozen=True)
class ModalityConfig:
    """One modality: its encoder (by name, with kwargs), input shape and head pooling."""

    name: str
    encoder: str
    input_shape: tuple[int, ...]
    head_pool: HeadPool = "mean"
    encoder_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TACFNConfig:
    """Architecture of a TACFN model; a preset is one of these."""

    dataset: Literal["ravdess", "iemocap"]
    modalities: tuple[ModalityConfig, ...]
    out_shape: tuple[int, ...]
    fusion: FusionConfig = FusionConfig()
    modality_dropout: Mapping[str, float] = field(default_factory=dict)
    backbone: BackboneMode = "finetune"
    preprocess: PreprocessConfig | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.modalities]
        if not names:
            raise ValueError("a model needs at least one modality")
        if self.backbone not in BACKBONE_MODES:
            raise ValueError(f"unknown backbone mode {self.backbone!r}; valid: {list(BACKBONE_MODES)}")
        for m in self.modalities:
            if m.encoder not in _ENCODERS:
                raise ValueError(f"unknown encoder {m.encoder!r}; valid: {sorted(_ENCODERS)}")
        unknown = sorted(set(self.modality_dropout) - set(names))
        if unknown:
            raise ValueError(f"modality_dropout names unknown modality {unknown}; this model has {names}")

    @property
    def modality_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modalities)


class TACFN(nn.Module):
    """Encoders, modality dropout and a fusion block (which owns the classifier).

    ``forward_features`` runs the encoders; ``forward_head`` applies modality dropout (in
    training), zeroes any ``missing`` modalities and runs the fusion block. In ``frozen``
    backbone mode the encoders never train and stay in eval mode, so their outputs can be
    computed once and cached, and training calls ``forward_head`` on cached features.
    """

    def __init__(self, cfg: TACFNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        encoders = {m.name: _ENCODERS[m.encoder](**dict(m.encoder_kwargs)) for m in cfg.modalities}
        self.encoders = nn.ModuleDict(encoders)
        self.feature_spec = FusionSpec(
            modalities=tuple(
                ModalitySpec(
                    name=m.name,
                    kind="grid" if len(m.input_shape) == 4 else "sequence",
                    shape=tuple(encoders[m.name].output_shape(m.input_shape)),
                    head_pool=m.head_pool,
                )
                for m in cfg.modalities
            ),
            out_shape=cfg.out_shape,
        )
        self.modality_dropout = ModalityDropout(cfg.modality_dropout)
        self.fusion = get_fusion_block_class(cfg.fusion.name)(self.feature_spec, cfg.fusion)
        if cfg.backbone == "frozen":
            self.encoders.requires_grad_(False)
            self.encoders.eval()

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.cfg.modality_names

    def forward_features(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Encoder outputs per modality, channels first."""
        missing = [name for name in self.modalities if name not in inputs]
        if missing:
            raise ValueError(f"inputs lack modality {missing}; expected {list(self.modalities)}")
        return {name: encoder(inputs[name]) for name, encoder in self.encoders.items()}

    def forward_head(self, features: Mapping[str, Tensor], missing: Iterable[str] = ()) -> Tensor:
        """Logits (B, *out_shape) from encoder features."""
        feats = self.modality_dropout(dict(features))
        missing = tuple(missing)
        if missing:
            feats = drop_modalities(feats, missing)
        return self.fusion(feats)

    def forward(self, inputs: Mapping[str, Tensor], missing: Iterable[str] = (), *, features: bool = False) -> Tensor:
        """Logits from model inputs, or from encoder features when ``features`` is true.

        Training on cached features goes through ``forward`` too, so that wrappers such as
        DistributedDataParallel see every step.
        """
        return self.forward_head(inputs if features else self.forward_features(inputs), missing)

    def train(self, mode: bool = True) -> TACFN:
        super().train(mode)
        if self.cfg.backbone == "frozen":
            self.encoders.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self) -> tuple[int, int]:
        """(total, trainable) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        return total, sum(p.numel() for p in self.trainable_parameters())


# --- presets ----------------------------------------------------------------------------

_PRESETS: dict[str, Callable[[], TACFNConfig]] = {}


def _register_preset(fn: Callable[[], TACFNConfig]) -> Callable[[], TACFNConfig]:
    _PRESETS[fn.__name__.removeprefix("_preset_")] = fn
    return fn


@_register_preset
def _preset_paper() -> TACFNConfig:
    prep = PAPER_PREPROCESS
    return TACFNConfig(
        dataset="ravdess",
        modalities=(
            ModalityConfig("video", "resnext3d50", prep.video_shape, "mean"),
            ModalityConfig("audio", "mfcc_cnn", prep.audio_shape, "flatten"),
        ),
        out_shape=(8,),
        preprocess=prep,
    )


@_register_preset
def _preset_lite() -> TACFNConfig:
    prep = LITE_PREPROCESS
    return TACFNConfig(
        dataset="ravdess",
        modalities=(
            ModalityConfig("video", "lite3d", prep.video_shape, "mean"),
            ModalityConfig("audio", "mfcc_cnn", prep.audio_shape, "flatten"),
        ),
        out_shape=(8,),
        fusion=FusionConfig(d=64, heads=4, layers=2, embed_dropout=0.1),
        preprocess=prep,
    )


@_register_preset
def _preset_iemocap() -> TACFNConfig:
    d = 30
    return TACFNConfig(
        dataset="iemocap",
        modalities=(
            ModalityConfig("text", "seq_proj", (20, 300), "mean", {"in_dim": 300, "d": d}),
            ModalityConfig("audio", "seq_proj", (400, 74), "mean", {"in_dim": 74, "d": d}),
            ModalityConfig("vision", "seq_proj", (500, 35), "mean", {"in_dim": 35, "d": d}),
        ),
        out_shape=(4, 2),
        fusion=FusionConfig(d=d, heads=5, layers=5, embed_dropout=0.25, head_dropout=0.0, direction="both"),
    )


def list_presets() -> list[str]:
    return sorted(_PRESETS)


def preset_config(preset: str) -> TACFNConfig:
    """The architecture of ``preset``; an unknown name lists the valid ones."""
    try:
        return _PRESETS[preset]()
    except KeyError:
        raise ConfigError(f"unknown preset {preset!r}; valid: {list_presets()}") from None


def configure(
    preset: str,
    *,
    fusion: str | FusionConfig | Mapping[str, Any] | None = None,
    modalities: Iterable[str] | None = None,
    input_lengths: Mapping[str, int] | None = None,
    **overrides: Any,
) -> TACFNConfig:
    """A preset's config with overrides applied.

    ``fusion`` is a block name, a full :class:`FusionConfig`, or a mapping of FusionConfig
    fields applied over the preset's (``{"name": "concat"}``, ``{"heads": 4}``).
    ``modalities`` keeps a subset (unimodal baselines need a block without cross-modal
    pairs, e.g. ``concat``). ``input_lengths`` sets sequence lengths (IEMOCAP's files
    fix them). Other overrides are :class:`TACFNConfig` fields.
    """
    cfg = preset_config(preset)
    if isinstance(fusion, str):
        fusion_cfg = replace(cfg.fusion, name=fusion)
    elif isinstance(fusion, FusionConfig):
        fusion_cfg = fusion
    elif fusion is not None:
        unknown = sorted(set(fusion) - set(FusionConfig.field_names()))
        if unknown:
            raise ConfigError(f"unknown fusion option(s) {unknown}; valid: {list(FusionConfig.field_names())}")
        fusion_cfg = replace(cfg.fusion, **fusion)
        if fusion_cfg.name in list_fusion_blocks():  # an unknown name fails when the block is built
            check_block_options(fusion_cfg.name, fusion, get_fusion_block_class(fusion_cfg.name).options, cfg.fusion)
    else:
        fusion_cfg = cfg.fusion
    mods = cfg.modalities
    if modalities is not None:
        keep = tuple(modalities)
        unknown = sorted(set(keep) - set(cfg.modality_names))
        if unknown:
            raise ConfigError(f"unknown modality {unknown}; {preset!r} has {list(cfg.modality_names)}")
        if not keep or len(set(keep)) != len(keep):
            raise ConfigError(f"modalities must name at least one of {list(cfg.modality_names)}, each once, but got {list(keep)}")
        mods = tuple(m for m in mods if m.name in keep)
    if input_lengths:
        mods = tuple(
            replace(m, input_shape=(input_lengths[m.name], *m.input_shape[1:])) if m.name in input_lengths else m
            for m in mods
        )
    unknown = sorted(set(overrides) - {"modality_dropout", "backbone", "out_shape"})
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; valid: fusion, modalities, modality_dropout, backbone")
    return replace(cfg, modalities=mods, fusion=fusion_cfg, **overrides)


def create_model(preset: str, **kwargs: Any) -> TACFN:
    """Build a TACFN model from a preset; see :func:`configure` for the overrides."""
    return TACFN(configure(preset, **kwargs))


def tacfn_paper(**kwargs: Any) -> TACFN:
    """The paper's RAVDESS model (26.30M parameters reported)."""
    return create_model("paper", **kwargs)


def tacfn_lite(**kwargs: Any) -> TACFN:
    """A CPU-friendly RAVDESS-format model for tests and the demo."""
    return create_model("lite", **kwargs)


def tacfn_iemocap(**kwargs: Any) -> TACFN:
    """The IEMOCAP sequence model (4 emotions x binary)."""
    return create_model("iemocap", **kwargs)
