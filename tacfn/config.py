"""The run configuration: one training run, as written in a YAML file and validated.

Every section rejects unknown keys, and every error names the file, the key and the rule,
so a typo in a 200-trial search fails before anything starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from .data.splits import FOLDS
from .data.synth import EFFECTS, check_effects
from .errors import ConfigError, describe_validation_error
from .model import TACFN, TACFNConfig, configure
from .model.fusion._config import FusionOptions

_FIXED_SPLIT_DATASETS = ("iemocap",)  # one train/valid/test split of their own: no folds

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PretrainSection(_Section):
    """Unimodal pretraining on the fold's training actors (:mod:`tacfn.pretrain`): each encoder
    trains with its own classifier for ``epochs`` and keeps the last (validation and test actors
    never reach it)."""

    epochs: int = Field(10, ge=1)
    lr: float = Field(2e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    seed: int = Field(0, ge=0)


class ModelSection(_Section):
    """Which network: a preset and what to change in it."""

    preset: str = "lite"
    fusion: FusionOptions = Field(default_factory=dict)  # type: ignore[assignment]
    modalities: list[str] | None = None
    modality_dropout: dict[str, float] = Field(default_factory=dict)
    backbone: Literal["finetune", "frozen"] | None = None
    checkpoints: dict[str, Path] = Field(default_factory=dict)
    pretrain: PretrainSection | None = None


class SyntheticSection(_Section):
    """Size, seed and planted effects of the embedded synthetic RAVDESS dataset."""

    actors: int = Field(24, ge=6, le=24)
    clips_per_actor: int = Field(16, ge=8, le=60)  # RAVDESS's speech clips per actor
    seed: int = Field(0, ge=0)
    effects: list[str] = Field(default_factory=lambda: list(EFFECTS))

    @field_validator("effects")
    @classmethod
    def _known_effects(cls, effects: list[str]) -> list[str]:
        return list(check_effects(effects))  # in EFFECTS order: one dataset per set of effects


class DataSection(_Section):
    """Where the data is; no ``path`` means the embedded synthetic dataset."""

    path: Path | None = None
    protocol: Literal["6fold", "paper5"] = "6fold"
    fold: int = Field(0, ge=0)
    synthetic: SyntheticSection = Field(default_factory=SyntheticSection)
    cache_dir: Path | None = None

    @field_validator("fold")
    @classmethod
    def _fold_exists(cls, fold: int, info: ValidationInfo) -> int:
        # Checked here, not when the data loads: a search or plan fails before it starts.
        protocol = info.data.get("protocol")  # absent when the protocol itself is invalid
        if protocol in FOLDS and fold >= FOLDS[protocol]:
            count = FOLDS[protocol]
            raise ValueError(f"protocol {protocol!r} has {count} folds (0..{count - 1}), but got fold={fold}")
        return fold


class TrainSection(_Section):
    """Optimisation settings; defaults are the paper's (Adam, lr 1e-3, batch 16, 70 epochs)."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(70, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, le=2**64 - 1)  # torch.manual_seed's range
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(False, description="bf16 autocast on CUDA; ignored on CPU")


class RunConfig(_Section):
    """One training run: model, data and optimisation."""

    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)

    @field_validator("model")
    @classmethod
    def _model_builds(cls, section: ModelSection, info: ValidationInfo) -> ModelSection:
        # Build on the meta device: every architecture rule is checked, no memory is used.
        if (info.context or {}).get("check_model", True):
            with torch.device("meta"):
                TACFN(_configure(section))
        return section

    @field_validator("data")
    @classmethod
    def _fold_of_a_fixed_split(cls, data: DataSection, info: ValidationInfo) -> DataSection:
        model = info.data.get("model")  # absent when the model section itself is invalid
        dataset = _configure(model).dataset if data.fold != 0 and model is not None else None
        if dataset in _FIXED_SPLIT_DATASETS:
            raise ValueError(f"{dataset} has one fixed train/valid/test split, so fold must be 0, but got fold={data.fold}")
        return data

    def architecture(self, input_lengths: dict[str, int] | None = None) -> TACFNConfig:
        """The validated model architecture for this run."""
        return _configure(self.model, input_lengths)


def _configure(section: ModelSection, input_lengths: dict[str, int] | None = None) -> TACFNConfig:
    overrides: dict[str, Any] = {"modality_dropout": section.modality_dropout}
    if section.backbone is not None:
        overrides["backbone"] = section.backbone
    return configure(
        section.preset,
        fusion=section.fusion or None,
        modalities=section.modalities,
        input_lengths=input_lengths,
        **overrides,
    )


def parse_run_config(data: Any, source: str = "<config>", *, check_model: bool = True) -> RunConfig:
    """Validate a mapping as a :class:`RunConfig`; raises ConfigError naming key and rule.

    ``check_model`` builds the model on the meta device, which catches every architecture
    rule, but its first use in a process imports ``torch._dynamo`` (about 2 s: torch's
    meta kernels for in-place initialisers live there). Code that builds the real model
    next (a search trial, a Ray Train worker) or re-reads a config that already trained
    passes False.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (model, data, train), got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data, context={"check_model": check_model})
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, RunConfig)}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` keys may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.append(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Path) -> Any:
    """Safe-load a YAML file (a key given twice is an error); a missing, malformed or
    non-UTF-8 file raises ConfigError with the line or the byte."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config YAML file."""
    return parse_run_config(load_yaml(path), str(path))
