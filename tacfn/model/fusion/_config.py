"""Hyperparameters shared by every fusion block, validated once."""

from __future__ import annotations

from dataclasses import dataclass, fields
from collections.abc import Mapping
from typing import Any, Literal, get_type_hints

from pydantic import ConfigDict
from typing_extensions import TypedDict

from ...errors import ConfigError

Selection = Literal["transformer", "mean", "none"]
SELECTIONS: tuple[str, ...] = ("transformer", "mean", "none")
AttendedPool = Literal["mean", "separate"]
ATTENDED_POOLS: tuple[str, ...] = ("mean", "separate")
# Deeper than any fusion transformer published (MulT and TACFN use 4-5): a larger number is a
# typo, and only building it to check the config would take minutes.
MAX_LAYERS = 64
# Integer options that only some blocks read, each at least 1.
BLOCK_OPTIONS: tuple[str, ...] = ("dim", "rank", "sketch_dim", "reduction")


@dataclass(frozen=True)
class FusionConfig:
    """Configuration of a fusion block; each block reads the fields it uses.

    Defaults are the paper's TACFN block on RAVDESS: d=64, 8 heads, 5 pre-LayerNorm
    layers with a causal mask, dropouts attn/relu/residual 0.1 and embedding 0.3, and
    dropout 0.4 on the flattened audio before the classifier (``head_dropout``).

    TACFN's parts are separate switches so that ablations can flip them one at a time:
    ``selection`` (how the source modality is summarised: a transformer's last step,
    a mean over positions, or the last position with no attention), ``fused_weight``
    (the position weights see both modalities; off, they see the target only),
    ``residual`` (v' = v * alpha + v; off, v' = v * alpha) and ``direction``
    (``"audio->video"``, ``"video->audio"``, several pairs joined by commas, or
    ``"both"`` for every ordered pair of modalities).

    ``attended_pool`` is how the classifier sees a reinforced target. ``"mean"`` (the
    paper) averages ``v * alpha + v`` over all P positions: the attended term arrives as
    ``sum_p alpha_p v_p / P``, added to the plain mean of every position. ``"separate"``
    gives the classifier ``sum_p alpha_p v_p`` as its own features beside the plain mean
    (alone without the residual). On the synthetic ground truth the paper's sum hides
    the cross-modal bit from a linear classifier even under perfect weights (README).

    The baselines of the fusion zoo read their own options: ``dim`` is the width each
    modality is projected to before TFN's outer product (the product grows as
    (dim + 1) ** M), LMF's fused output width, and the channels of one MSAF block;
    ``rank`` is LMF's number of modality-specific factors; ``sketch_dim`` is the width of
    MCBP's count sketches (its fused vector); ``reduction`` is how much MMTM's and MSAF's
    joint squeeze narrows the channels it sees. An option given for a block that does not
    read it is an error (``check_block_options``).
    """

    name: str = "tacfn"
    d: int = 64
    heads: int = 8
    layers: int = 5
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.3
    head_dropout: float = 0.4
    causal: bool = True
    selection: Selection = "transformer"
    fused_weight: bool = True
    residual: bool = True
    direction: str = "audio->video"
    attended_pool: AttendedPool = "mean"
    dim: int = 16
    rank: int = 4
    sketch_dim: int = 1024
    reduction: int = 4

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"`d >= 1` must hold, but got d={self.d}")
        if self.heads < 1 or self.d % self.heads != 0:
            raise ValueError(
                f"`heads` must divide `d`, but got heads={self.heads}, d={self.d}; "
                f"valid heads for d={self.d}: {valid_heads(self.d)}"
            )
        if not 1 <= self.layers <= MAX_LAYERS:
            raise ValueError(f"`1 <= layers <= {MAX_LAYERS}` must hold, but got layers={self.layers}")
        for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "head_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`0 <= {name} < 1` must hold, but got {name}={value}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; valid: {list(SELECTIONS)}")
        if self.attended_pool not in ATTENDED_POOLS:
            raise ValueError(f"unknown attended_pool {self.attended_pool!r}; valid: {list(ATTENDED_POOLS)}")
        for name in BLOCK_OPTIONS:
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"fusion block {self.name!r}: `{name} >= 1` must hold, but got {name}={value}")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


# FusionConfig fields as a run config gives them, for pydantic: any subset, each of exactly
# its field's type (no 64.5 for d, no "false" for residual), and no other key.
FusionOptions = TypedDict("FusionOptions", get_type_hints(FusionConfig), total=False)  # type: ignore[misc]
FusionOptions.__pydantic_config__ = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # type: ignore[attr-defined]


def check_block_options(block: str, given: Mapping[str, Any], options: tuple[str, ...],
                        defaults: FusionConfig | None = None) -> None:
    """Raise a one-line ConfigError when ``given`` (the fusion options a user set) holds one
    that block ``block``, which reads only ``options``, does not read.

    An option given at its value in ``defaults`` (the preset's fusion config; by default
    :class:`FusionConfig`'s) changes nothing and passes, so a config may spell defaults out.
    """
    defaults = defaults or FusionConfig()
    for name, value in given.items():
        if name != "name" and name not in options and value != getattr(defaults, name):
            raise ConfigError(
                f"fusion block {block!r} does not read option {name!r} (got {name}={value!r}); "
                f"it reads {list(options)}"
            )


def valid_heads(d: int) -> list[int]:
    """Head counts that divide ``d``."""
    return [h for h in range(1, d + 1) if d % h == 0]


def resolve_direction(direction: str, modalities: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Turn a direction string into (source, target) pairs over ``modalities``.

    ``"both"`` (or ``"all"``) means every ordered pair. Raises with the valid forms when a
    pair names a modality the model does not have, or a modality reinforces itself, and
    for a single modality, which has no pair at all.
    """
    if len(modalities) < 2:
        raise ValueError(
            f"invalid fusion direction {direction!r}: the tacfn block needs at least two modalities "
            f"(it reinforces one with another), but got {list(modalities)}; for one modality use "
            "model.fusion.name: concat"
        )
    if direction in ("both", "all"):
        return tuple((s, t) for t in modalities for s in modalities if s != t)
    pairs = []
    for part in direction.split(","):
        source, sep, target = (x.strip() for x in part.partition("->"))
        valid = [f"{s}->{t}" for t in modalities for s in modalities if s != t] + ["both"]
        if not sep or source not in modalities or target not in modalities or source == target:
            raise ValueError(f"invalid fusion direction {part.strip()!r}; valid: {valid}")
        pairs.append((source, target))
    if len(set(pairs)) != len(pairs):
        raise ValueError(f"fusion direction {direction!r} repeats a pair")
    return tuple(pairs)
