"""A search space compiled to plain data, and sampled: :func:`compile_space` turns a
:class:`SearchSpec` into a :class:`SpaceInfo` (its axes, their distributions and conditions,
in sampling order); :class:`SearchSpace` samples it define-by-run into an ``optuna.Trial``;
:func:`grid` lists every combination of a finite space; :func:`config_hash` keys a trial's
run config for pairing across seeds and folds.

Importing this module needs neither torch nor the model. Compiling a space that searches
``model.fusion.name`` asks the model's fusion-block registry which blocks exist and which have
attention (that imports torch); no other space does.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigError
from ..nested import prune_empty
from ._space_schema import AxisKind, AxisSpec, SearchSpec

if TYPE_CHECKING:
    from types import ModuleType

    import optuna

FUSION_PREFIX = "model.fusion."
FUSION_NAME, HEADS, DIM = "model.fusion.name", "model.fusion.heads", "model.fusion.d"
MAX_VALUES = 10_000  # values of one int axis, or combinations of conditions, that validation walks
_INACTIVE = object()  # the value of an axis a trial did not sample

Condition = tuple[str, tuple[Any, ...]]  # a parent key and the values that let an axis be sampled


class AxisInfo(NamedTuple):
    """One axis, compiled: its distribution and the conditions under which it is sampled.

    ``when`` pairs a parent key with its allowed values; the axis is sampled when every
    parent was sampled with an allowed value.
    """

    key: str
    kind: AxisKind
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: tuple[Condition, ...] = ()

    def active(self, params: Mapping[str, Any]) -> bool:
        """Whether a trial with sampled ``params`` (so far) samples this axis."""
        return all(_contains(allowed, params.get(parent, _INACTIVE)) for parent, allowed in self.when)


class SpaceInfo(NamedTuple):
    """The axes of a space in sampling order (every axis after the axes its conditions name)."""

    axes: tuple[AxisInfo, ...]


def compile_space(spec: SearchSpec) -> SpaceInfo:
    """The axes of ``spec`` with their distributions and conditions, in sampling order.

    When ``model.fusion.name`` is an axis, an axis of a fusion option gains the condition
    "the sampled block reads it" (``heads`` only for blocks with attention, ``rank`` only
    for ``lmf``, ...). Raises ConfigError for a ``when`` that names no other axis, a value
    that axis cannot take, conditions that form a cycle, or a fusion option that no block
    it can be sampled with reads.
    """
    axes = {key: _axis_info(key, axis) for key, axis in spec.space.items()}
    for key, axis in spec.space.items():
        when = [(parent, tuple(values)) for parent, values in axis.when.items()]
        for parent, values in when:
            _check_condition(key, parent, values, axes)
        if key.startswith(FUSION_PREFIX) and key != FUSION_NAME and FUSION_NAME in axes:
            when = _reader_condition(key, when, axes[FUSION_NAME].choices)
        axes[key] = axes[key]._replace(when=tuple(when))
    return SpaceInfo(tuple(axes[key] for key in _sampling_order(axes)))


def _axis_info(key: str, axis: AxisSpec) -> AxisInfo:
    if axis.choice is not None:
        if key == FUSION_NAME:
            blocks = _fusion_registry().list_fusion_blocks()
            for name in axis.choice:
                if name not in blocks:
                    raise ConfigError(f"space.{key}: unknown fusion block {name!r}; valid: {blocks}")
        return AxisInfo(key, "choice", choices=tuple(axis.choice))
    if axis.int_range is not None:
        int_low, int_high = axis.int_range
        return AxisInfo(key, "int", low=int_low, high=int_high, step=int(axis.step or 1), log=axis.log)
    assert axis.float_range is not None  # AxisSpec checks that exactly one of choice, int, float is given
    low, high = axis.float_range
    return AxisInfo(key, "float", low=low, high=high, step=axis.step, log=axis.log)


def _check_condition(key: str, parent: str, values: tuple[Any, ...], axes: Mapping[str, AxisInfo]) -> None:
    where = f"space.{key}.when.{parent}"
    if parent == key:
        raise ConfigError(f"{where}: an axis cannot be conditioned on itself")
    if parent not in axes:
        others = [k for k in axes if k != key]
        if not others:
            raise ConfigError(f"{where}: this space has no other axis")
        raise ConfigError(f"{where}: not an axis of this space; valid: {others}")
    axis = axes[parent]
    if axis.kind == "float":
        raise ConfigError(f"{where}: conditions need a choice or int axis, but {parent} is a float range")
    for value in values:
        if not _contains(finite_values(axis), value):
            valid = list(axis.choices) if axis.kind == "choice" else f"[{axis.low}, {axis.high}] in steps of {axis.step}"
            raise ConfigError(f"{where}: {value!r} is not a value {parent} can take; valid: {valid}")


def _reader_condition(key: str, when: list[Condition], names: tuple[Any, ...]) -> list[Condition]:
    """Restrict the condition of fusion option ``key`` on the block name to the blocks that
    read the option; a ``when`` that names a block which does not read it is refused."""
    option = key[len(FUSION_PREFIX):]
    given = dict(when)
    block_class = _fusion_registry().get_fusion_block_class
    candidates = given.get(FUSION_NAME, names)
    readers = tuple(n for n in candidates if option in block_class(n).options)
    if FUSION_NAME in given and readers != tuple(candidates):
        deaf = [n for n in candidates if n not in readers]
        raise ConfigError(f"space.{key}.when.{FUSION_NAME}: block(s) {deaf} do not read {option}")
    if not readers:
        raise ConfigError(
            f"space.{key}: no block it can be sampled with ({list(candidates)}) reads {option}, "
            "so it would never be sampled"
        )
    if readers == tuple(names):
        return when
    given.pop(FUSION_NAME, None)
    return [(FUSION_NAME, readers), *given.items()]


def _fusion_registry() -> ModuleType:
    """The model's fusion-block registry, imported only for a space that searches the block."""
    from ..model import fusion

    return fusion


def _sampling_order(axes: Mapping[str, AxisInfo]) -> list[str]:
    """File order, except that an axis comes after every axis its conditions name."""
    order: list[str] = []
    remaining = list(axes)
    while remaining:
        ready = next((k for k in remaining if all(p in order for p, _ in axes[k].when)), None)
        if ready is None:
            raise ConfigError(f"space.{remaining[0]}: `when` conditions form a cycle among {remaining}")
        order.append(ready)
        remaining.remove(ready)
    return order


def _contains(values: Iterable[Any], value: Any) -> bool:
    """Membership that keeps types apart (``True`` is not ``1``)."""
    return any(type(v) is type(value) and v == value for v in values)


# --- sampling -------------------------------------------------------------------------------


class SearchSpace:
    """An Optuna define-by-run space: ``space(trial)`` samples the axes of ``info``.

    Each axis is sampled under its dotted key when its conditions hold; conditions are read
    from the values this call sampled, never from ``trial.params``, so Ray's ``OptunaSearch``
    may pass its own wrapper of the trial. It computes nothing and returns None (Ray accepts
    a dict of constants; there are none). It holds plain data only, so it pickles.
    """

    def __init__(self, info: SpaceInfo) -> None:
        self.info = info

    def __call__(self, trial: optuna.Trial) -> None:
        params: dict[str, Any] = {}
        for axis in self.info.axes:
            if axis.active(params):
                params[axis.key] = _suggest(trial, axis)

    def __repr__(self) -> str:
        return f"SearchSpace({[axis.key for axis in self.info.axes]})"


def _int_range(axis: AxisInfo) -> tuple[int, int, int]:
    """``(low, high, step)`` of an int axis (compile_space gives it all three)."""
    assert axis.low is not None and axis.high is not None and axis.step is not None, axis
    return int(axis.low), int(axis.high), int(axis.step)


def _float_range(axis: AxisInfo) -> tuple[float, float]:
    """``(low, high)`` of a float axis (compile_space gives it both)."""
    assert axis.low is not None and axis.high is not None, axis
    return axis.low, axis.high


def _suggest(trial: optuna.Trial, axis: AxisInfo) -> Any:
    if axis.kind == "choice":
        return trial.suggest_categorical(axis.key, list(axis.choices))
    if axis.kind == "int":
        low, high, step = _int_range(axis)
        return trial.suggest_int(axis.key, low, high, step=step, log=axis.log)
    return trial.suggest_float(axis.key, *_float_range(axis), step=axis.step, log=axis.log)


def optuna_distributions(info: SpaceInfo) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each axis as an Optuna distribution (to enqueue or add trials by hand)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for axis in info.axes:
        if axis.kind == "choice":
            out[axis.key] = CategoricalDistribution(list(axis.choices))
        elif axis.kind == "int":
            low, high, step = _int_range(axis)
            out[axis.key] = IntDistribution(low, high, log=axis.log, step=step)
        else:
            out[axis.key] = FloatDistribution(*_float_range(axis), log=axis.log, step=axis.step)
    return out


def grid(info: SpaceInfo) -> list[dict[str, Any]]:
    """Every combination of a finite space, as the params each trial would sample.

    Conditional axes appear only in combinations where their conditions hold. Raises
    ConfigError when an axis is a float range.
    """
    for axis in info.axes:
        if axis.kind == "float":
            raise ConfigError(
                f"space.{axis.key}: the grid needs finite axes (a choice list or an int range), "
                f"but this is a float range"
            )
    return combinations(info.axes)


def combinations(axes: Iterable[AxisInfo], limit: int | None = None) -> list[dict[str, Any]]:
    """Every assignment of finite ``axes`` (in sampling order) that respects their conditions."""
    combos: list[dict[str, Any]] = [{}]
    for axis in axes:
        expanded: list[dict[str, Any]] = []
        for combo in combos:
            if axis.active(combo):
                expanded += [{**combo, axis.key: value} for value in finite_values(axis)]
            else:
                expanded.append(combo)
        combos = expanded
        if limit is not None and len(combos) > limit:
            raise ConfigError(
                f"space: the `when` conditions make more than {limit} combinations to validate; condition on fewer axes"
            )
    return combos


def finite_values(axis: AxisInfo) -> tuple[Any, ...]:
    """Every value of a choice list or an int range; ConfigError past MAX_VALUES of them."""
    if axis.kind == "choice":
        return axis.choices
    low, high, step = _int_range(axis)
    count = (high - low) // step + 1
    if count > MAX_VALUES:
        raise ConfigError(f"space.{axis.key}: {count} values are too many to enumerate; use a larger step")
    return tuple(range(low, high + 1, step))


# --- run configs from params ----------------------------------------------------------------


def config_hash(run_cfg: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of a run-config mapping without ``train.seed`` and ``data.fold``.

    Runs of one configuration on different seeds and folds share the hash, which pairs them
    in comparisons. Keys are sorted and empty mappings dropped; values are hashed as written
    (``lr: 0.001`` given explicitly differs from the default left out).
    """
    cfg = copy.deepcopy(dict(run_cfg))
    for section, key in (("train", "seed"), ("data", "fold")):
        if isinstance(cfg.get(section), dict):
            cfg[section].pop(key, None)
    text = json.dumps(prune_empty(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
