"""Search spaces: a YAML file -> a validated :class:`SearchSpec` -> an Optuna define-by-run space.

A search-space file names a base run config, the axes to search and how to search::

    name: quickstart                 # experiment name (a folder name)
    base:                            # a RunConfig mapping every trial starts from
      model: {preset: lite, backbone: frozen}
      train: {epochs: 6, batch_size: 16}
    space:                           # dotted RunConfig keys -> one distribution each
      model.fusion.name: {choice: [tacfn, concat, late_average, late_product, mult]}
      model.fusion.heads: {choice: [1, 2, 4, 8]}     # sampled only when the block has attention
      model.fusion.layers: {int: [1, 3]}
      model.fusion.selection: {choice: [transformer, mean, none], when: {model.fusion.name: [tacfn]}}
      model.modality_dropout.audio: {float: [0.0, 0.5]}
      train.lr: {float: [1.0e-4, 1.0e-2], log: true}
      train.batch_size: {int: [8, 32], step: 8}
    search:
      metric: val_score              # maximised: val_score | val_weighted_f1
      trials: 16
      concurrency: 2
      scheduler: asha                # asha | none
      asha: {grace_period: 1, reduction_factor: 2}
      seed: 0
      resources: {cpu: 1, gpu: 0}    # per trial (per worker when workers > 1); gpu may be 0.25
      workers: 1                     # Ray Train workers per trial (>1: DDP)
      objectives: []                 # extra objectives to minimise: num_parameters | latency_ms

An axis is exactly one of ``choice: [values]``, ``int: [low, high]`` (optional ``step``, or
``log: true``) and ``float: [low, high]`` (optional ``step`` or ``log: true``); ranges include
both ends. ``when: {other.key: [values]}`` samples the axis only in trials where every named axis
was sampled with one of the listed values. ``model.fusion.heads`` is sampled only for blocks
with attention when ``model.fusion.name`` is an axis. A key that is not sampled keeps its base
value.

Everything is checked when the file loads, before any Ray start: unknown keys, ranges,
conditions, and that every choice and both ends of every range give a valid run config in every
combination of conditions (with ``heads`` dividing ``d`` for every pair that can be sampled
together). Errors are :class:`~tacfn.errors.ConfigError` with one line, ``FILE: key: rule``.

:func:`compile_space` turns a spec into a :class:`SpaceInfo` (plain data); :class:`SearchSpace`
samples it define-by-run into an ``optuna.Trial``; :func:`apply_overrides` turns sampled params
into a run-config mapping, and :func:`config_hash` keys it for pairing across seeds and folds.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import RunConfig, load_yaml
from ..errors import ConfigError, describe_validation_error
from ..model import TACFNConfig
from ..model.fusion import FusionConfig, get_fusion_block_class, list_fusion_blocks, valid_heads
from ..nested import apply_overrides, prune_empty

if TYPE_CHECKING:
    import optuna

# The shipped spaces: the checkout's search_spaces/, which a wheel installs beside tacfn.
SEARCH_SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
Metric = Literal["val_score", "val_weighted_f1"]  # maximised
Objective = Literal["num_parameters", "latency_ms"]  # minimised
METRICS: tuple[str, ...] = get_args(Metric)
OBJECTIVES: tuple[str, ...] = get_args(Objective)

FUSION_NAME, HEADS, DIM = "model.fusion.name", "model.fusion.heads", "model.fusion.d"
# Axes valid only in pairs: a fold must exist in the protocol sampled with it.
_COUPLED_AXES = (("data.protocol", "data.fold"),)
_MAX_VALUES = 10_000  # values of one int axis, or combinations of conditions, that validation walks
_INACTIVE = object()  # the value of an axis a trial did not sample

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]
AxisKind = Literal["choice", "int", "float"]
Condition = tuple[str, tuple[Any, ...]]  # a parent key and the values that let an axis be sampled


# --- the file -----------------------------------------------------------------------------


def check_folder_name(name: str) -> str:
    """``name`` if it is one plain folder name (the default ``runs/NAME``); a path such as
    ``../x`` or ``/x`` raises ValueError, so a file cannot send results outside ``runs/``."""
    if not name or not name[0].isalnum() or not all(c.isalnum() or c in "_.-" for c in name):
        raise ValueError(f"`name` must be a folder name (letters, digits, `_`, `.`, `-`), but got {name!r}")
    return name


def _non_finite(value: Any) -> float | None:
    """The first NaN or infinity in ``value`` (a number, or lists and mappings of them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    for item in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        bad = _non_finite(item)
        if bad is not None:
            return bad
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class AxisSpec(_Strict):
    """One axis as written: exactly one of ``choice``, ``int``, ``float``."""

    choice: list[Scalar] | None = None
    int_range: tuple[StrictInt, StrictInt] | None = Field(None, alias="int")
    float_range: tuple[float, float] | None = Field(None, alias="float")
    step: StrictInt | float | None = None
    log: bool = False
    when: dict[str, list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _is_mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("an axis is a mapping with one of `choice`, `int`, `float`; fixed values go in `base`")
        for key, value in data.items():  # here, not per field: `choice` and `step` are unions that would hide the rule
            bad = _non_finite(value)
            if bad is not None:
                raise ValueError(f"`{key}` holds {bad}, but every number must be finite")
        return data

    @field_validator("when")
    @classmethod
    def _when_lists(cls, when: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in when.items():
            if not values:
                raise ValueError(f"empty value list for {key}")
        return when

    @model_validator(mode="after")
    def _check(self) -> AxisSpec:
        kinds = (("choice", self.choice), ("int", self.int_range), ("float", self.float_range))
        given = [kind for kind, value in kinds if value is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of `choice`, `int`, `float` must be given, but got {given or 'none'}")
        if self.choice is not None:
            if not self.choice:
                raise ValueError("empty choice list")
            if self.step is not None or self.log:
                raise ValueError("`step` and `log` apply to `int` and `float` ranges, not to a choice list")
            seen: set[tuple[type, Any]] = set()
            for value in self.choice:
                if (type(value), value) in seen:
                    raise ValueError(f"choice values must be distinct, but {value!r} repeats")
                seen.add((type(value), value))
            return self
        low, high = self.int_range or self.float_range
        if not low <= high:
            raise ValueError(f"`low <= high` must hold, but got (low={low}, high={high})")
        if self.log and low <= 0:
            raise ValueError(f"`low > 0` must hold for a log range, but got low={low}")
        if self.step is not None:
            if self.log:
                raise ValueError("`step` and `log` cannot be combined")
            if self.step <= 0:
                raise ValueError(f"`step > 0` must hold, but got step={self.step}")
            if self.int_range is not None and not isinstance(self.step, int):
                raise ValueError(f"the `step` of an int range must be an integer, but got step={self.step}")
            count = (high - low) / self.step
            if abs(count - round(count)) > 1e-9:
                raise ValueError(
                    f"`high - low` must be a multiple of `step`, but got (low={low}, high={high}, step={self.step})"
                )
        return self

    @property
    def kind(self) -> AxisKind:
        return "choice" if self.choice is not None else "int" if self.int_range is not None else "float"


class AshaSettings(_Strict):
    """Asynchronous successive halving: stop the worse trials early, at rungs of epochs."""

    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(4, gt=1)


class Resources(_Strict):
    """What one trial (one worker, with ``workers > 1``) reserves; GPUs may be shared (0.25)."""

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, gpu: float) -> float:
        if gpu > 1 and not float(gpu).is_integer():
            raise ValueError(f"a share of GPUs above 1 must be a whole number, but got gpu={gpu}")
        return gpu


class SearchSettings(_Strict):
    """How to search: objective, budget, scheduler, seed, resources and failure policy.

    ``max_failures`` is how many times a trial whose process or node dies is restarted
    from its last checkpoint before it is recorded as failed. A trial checkpoints when
    ``checkpoint_interval_s`` have passed since its last checkpoint (0: after every epoch)
    and after its last epoch.
    """

    metric: Metric = "val_score"
    trials: int = Field(16, ge=1)
    concurrency: int = Field(1, ge=1)
    scheduler: Literal["asha", "none"] = "asha"
    asha: AshaSettings = Field(default_factory=AshaSettings)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's and Optuna's seed range
    resources: Resources = Field(default_factory=Resources)
    workers: int = Field(1, ge=1)
    objectives: list[Objective] = Field(default_factory=list)
    max_failures: int = Field(2, ge=0)
    checkpoint_interval_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct, but got {self.objectives}")
        if self.workers > 1 and 0 < self.resources.gpu < 1:
            raise ValueError(
                f"workers > 1 need a whole GPU each (DDP ranks cannot share one), "
                f"but got (workers={self.workers}, gpu={self.resources.gpu})"
            )
        return self


class SearchSpec(_Strict):
    """A search-space file: experiment name, base run config, axes and search settings."""

    name: str
    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, AxisSpec]
    search: SearchSettings = Field(default_factory=SearchSettings)

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        return check_folder_name(name)

    @field_validator("base", mode="before")
    @classmethod
    def _empty_base(cls, base: Any) -> Any:
        return {} if base is None else base

    @field_validator("space")
    @classmethod
    def _not_empty(cls, space: dict[str, AxisSpec]) -> dict[str, AxisSpec]:
        if not space:
            raise ValueError("at least one axis is needed")
        return space


# --- the compiled space -------------------------------------------------------------------


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

    ``model.fusion.heads`` gains the condition "the block has attention" when
    ``model.fusion.name`` is an axis. Raises ConfigError for a ``when`` that names no other
    axis, a value that axis cannot take, or conditions that form a cycle.
    """
    axes = {key: _axis_info(key, axis) for key, axis in spec.space.items()}
    for key, axis in spec.space.items():
        when = [(parent, tuple(values)) for parent, values in axis.when.items()]
        for parent, values in when:
            _check_condition(key, parent, values, axes)
        if key == HEADS and FUSION_NAME in axes:
            when = _attention_condition(when, axes[FUSION_NAME].choices)
        axes[key] = axes[key]._replace(when=tuple(when))
    return SpaceInfo(tuple(axes[key] for key in _sampling_order(axes)))


def _axis_info(key: str, axis: AxisSpec) -> AxisInfo:
    if axis.choice is not None:
        if key == FUSION_NAME:
            for name in axis.choice:
                if name not in list_fusion_blocks():
                    raise ConfigError(f"space.{key}: unknown fusion block {name!r}; valid: {list_fusion_blocks()}")
        return AxisInfo(key, "choice", choices=tuple(axis.choice))
    if axis.int_range is not None:
        low, high = axis.int_range
        return AxisInfo(key, "int", low=low, high=high, step=int(axis.step or 1), log=axis.log)
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
        if not _contains(_finite_values(axis), value):
            valid = list(axis.choices) if axis.kind == "choice" else f"[{axis.low}, {axis.high}] in steps of {axis.step}"
            raise ConfigError(f"{where}: {value!r} is not a value {parent} can take; valid: {valid}")


def _attention_condition(when: list[Condition], names: tuple[Any, ...]) -> list[Condition]:
    """Restrict ``heads``'s condition on the block name to blocks with attention."""
    given = dict(when)
    allowed = tuple(n for n in given.get(FUSION_NAME, names) if get_fusion_block_class(n).has_attention)
    if not allowed:
        raise ConfigError(
            f"space.{HEADS}: no block it can be sampled with has attention "
            f"({list(given.get(FUSION_NAME, names))}), so heads would never be sampled"
        )
    given.pop(FUSION_NAME, None)
    return [(FUSION_NAME, allowed), *given.items()]


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


def _suggest(trial: optuna.Trial, axis: AxisInfo) -> Any:
    if axis.kind == "choice":
        return trial.suggest_categorical(axis.key, list(axis.choices))
    if axis.kind == "int":
        return trial.suggest_int(axis.key, int(axis.low), int(axis.high), step=int(axis.step), log=axis.log)
    return trial.suggest_float(axis.key, axis.low, axis.high, step=axis.step, log=axis.log)


def optuna_distributions(info: SpaceInfo) -> dict[str, optuna.distributions.BaseDistribution]:
    """Each axis as an Optuna distribution (to enqueue or add trials by hand)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for axis in info.axes:
        if axis.kind == "choice":
            out[axis.key] = CategoricalDistribution(list(axis.choices))
        elif axis.kind == "int":
            out[axis.key] = IntDistribution(int(axis.low), int(axis.high), log=axis.log, step=int(axis.step))
        else:
            out[axis.key] = FloatDistribution(axis.low, axis.high, log=axis.log, step=axis.step)
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
    return _combinations(info.axes)


def _combinations(axes: Iterable[AxisInfo], limit: int | None = None) -> list[dict[str, Any]]:
    """Every assignment of finite ``axes`` (in sampling order) that respects their conditions."""
    combos: list[dict[str, Any]] = [{}]
    for axis in axes:
        expanded: list[dict[str, Any]] = []
        for combo in combos:
            if axis.active(combo):
                expanded += [{**combo, axis.key: value} for value in _finite_values(axis)]
            else:
                expanded.append(combo)
        combos = expanded
        if limit is not None and len(combos) > limit:
            raise ConfigError(
                f"space: the `when` conditions make more than {limit} combinations to validate; condition on fewer axes"
            )
    return combos


def _finite_values(axis: AxisInfo) -> tuple[Any, ...]:
    if axis.kind == "choice":
        return axis.choices
    count = (int(axis.high) - int(axis.low)) // int(axis.step) + 1
    if count > _MAX_VALUES:
        raise ConfigError(f"space.{axis.key}: {count} values are too many to enumerate; use a larger step")
    return tuple(range(int(axis.low), int(axis.high) + 1, int(axis.step)))


def _test_values(axis: AxisInfo) -> tuple[Any, ...]:
    """The values validation tries: every choice, or both ends of a range."""
    if axis.kind == "choice":
        return axis.choices
    return (axis.low,) if axis.low == axis.high else (axis.low, axis.high)


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


# --- loading and validation ---------------------------------------------------------------


def list_spaces() -> list[str]:
    """Names of the search-space files shipped in ``search_spaces/``."""
    names = []
    for path in sorted(SEARCH_SPACES_DIR.glob("*.y*ml")):
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "space" in data:
            names.append(path.stem)
    return names


def find_space(name_or_path: str | Path) -> Path:
    """A search-space file: an existing path, or a name from ``search_spaces/``."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(f"{name_or_path}: no such search-space file")
    for suffix in (".yaml", ".yml"):
        candidate = SEARCH_SPACES_DIR / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise ConfigError(f"unknown search space {str(name_or_path)!r}; valid: {list_spaces()} (or a path to a YAML file)")


def load_space(path: str | Path) -> SearchSpec:
    """Read and validate a search-space YAML file."""
    return parse_space(load_yaml(Path(path)), str(path))


def parse_space(data: Any, source: str = "<space>") -> SearchSpec:
    """Validate a mapping as a :class:`SearchSpec`; every error is one ConfigError line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with name, base, space, search, got {type(data).__name__}")
    try:
        spec = SearchSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, SearchSpec)}") from None
    try:
        _validate(spec)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    return spec


def _validate(spec: SearchSpec) -> None:
    try:
        base = RunConfig.model_validate(spec.base)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, RunConfig, at="base")) from None
    arch = base.architecture()
    for key, axis in spec.space.items():
        _check_axis_type(key, axis, _base_value(key, base, arch))
    fixed_block = get_fusion_block_class(arch.fusion.name)
    if HEADS in spec.space and FUSION_NAME not in spec.space and not fixed_block.has_attention:
        raise ConfigError(f"space.{HEADS}: block {arch.fusion.name!r} has no attention, so heads never matters")
    info = compile_space(spec)
    _check_combinations(spec.base, info, arch)
    _check_asha(spec.search, info, base)


def _base_value(key: str, base: RunConfig, arch: TACFNConfig) -> Any:
    """The value ``key`` has in the base run config; raises for a key that is not searchable."""
    section, _, rest = key.partition(".")
    if section == "model":
        option, _, name = rest.partition(".")
        if option == "fusion" and name and "." not in name:
            if name not in FusionConfig.field_names():
                raise ConfigError(f"space.{key}: unknown fusion option; valid: {list(FusionConfig.field_names())}")
            return getattr(arch.fusion, name)
        if option == "modality_dropout" and name and "." not in name:
            if name not in arch.modality_names:
                raise ConfigError(f"space.{key}: unknown modality; valid: {list(arch.modality_names)}")
            return float(arch.modality_dropout.get(name, 0.0))
        if rest == "backbone":
            return arch.backbone
        if rest == "preset":
            raise ConfigError(f"space.{key}: not searchable; a search runs within one preset (its inputs and data)")
        raise ConfigError(
            f"space.{key}: not a searchable model option; valid: model.backbone, "
            f"model.fusion.<{'|'.join(FusionConfig.field_names())}>, model.modality_dropout.<modality>"
        )
    if section not in ("data", "train"):
        raise ConfigError(f"space.{key}: unknown section {section!r}; valid: ['data', 'model', 'train']")
    searchable = _scalar_fields(type(getattr(base, section)), section)
    if key not in searchable:
        raise ConfigError(f"space.{key}: unknown or not searchable {section} option; valid: {searchable}")
    value: Any = base
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _scalar_fields(cls: type[BaseModel], prefix: str) -> list[str]:
    """Dotted names of the fields of ``cls`` (and its sub-sections) that hold one scalar."""
    names = []
    for name, field in cls.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += _scalar_fields(kind, f"{prefix}.{name}")
        elif kind in (bool, int, float, str) or get_origin(kind) is Literal:
            names.append(f"{prefix}.{name}")
    return names


_TYPE_WORDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def _check_axis_type(key: str, axis: AxisSpec, current: Any) -> None:
    """An axis's values must have the type of the option it sets."""
    expected = type(current)
    if axis.kind == "int" and expected is not int:
        raise ConfigError(f"space.{key}: an `int` range needs an integer option, but {key} is {_TYPE_WORDS[expected]}")
    if axis.kind == "float" and expected is not float:
        hint = "; use `int`" if expected is int else "; use `choice`"
        raise ConfigError(
            f"space.{key}: a `float` range needs a real-valued option, but {key} is {_TYPE_WORDS[expected]}{hint}"
        )
    for value in axis.choice or ():
        if not _fits(value, expected):
            hint = ""
            if isinstance(value, str) and expected in (int, float) and _is_number(value):
                hint = f" (YAML reads {value} as a string; write it with a decimal point, e.g. 1.0e-4)"
            raise ConfigError(f"space.{key}: choice {value!r} is not {_TYPE_WORDS[expected]}, which {key} takes{hint}")


def _fits(value: Any, expected: type) -> bool:
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    return isinstance(value, (int, float) if expected is float else expected)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_asha(search: SearchSettings, info: SpaceInfo, base: RunConfig) -> None:
    if search.scheduler != "asha":
        return
    epochs = [base.train.epochs]
    for axis in info.axes:
        if axis.key == "train.epochs":
            epochs = [int(v) for v in _test_values(axis)] + ([base.train.epochs] if axis.when else [])
    if search.asha.grace_period > min(epochs):
        raise ConfigError(
            f"search.asha.grace_period: `grace_period <= train.epochs` must hold for every trial, "
            f"but got (grace_period={search.asha.grace_period}, epochs={min(epochs)})"
        )


def _check_combinations(base: dict[str, Any], info: SpaceInfo, arch: TACFNConfig) -> None:
    """Every value of every axis, in every combination of conditions, gives a valid run config.

    Axes that conditions name are enumerated (each combination is a scenario); within one,
    the other axes are independent, so ``heads`` is checked against ``d`` over every pair and
    the rest together in a few probes: probe i sets every axis to its i-th test value. A
    failing probe is taken apart to name the axis and value at fault.
    """
    parents = {parent for axis in info.axes for parent, _ in axis.when}
    leaves = [axis for axis in info.axes if axis.key not in parents]
    for scenario in _combinations((a for a in info.axes if a.key in parents), limit=_MAX_VALUES):
        active = [axis for axis in leaves if axis.active(scenario)]
        _check_heads_divide_d(scenario, {a.key: a for a in active}, arch)
        _check_coupled_pairs(base, scenario, {a.key: a for a in active})
        depth = max((len(_test_values(axis)) for axis in active), default=1)
        for i in range(depth):
            params = {**scenario, **{a.key: _test_values(a)[i % len(_test_values(a))] for a in active}}
            message = _run_config_error(apply_overrides(base, params))
            if message:
                raise ConfigError(_explain(base, info, scenario, params, message))


def _check_heads_divide_d(scenario: Mapping[str, Any], active: Mapping[str, AxisInfo], arch: TACFNConfig) -> None:
    def values(key: str, fixed: int) -> tuple[Any, ...]:
        if key in scenario:
            return (scenario[key],)
        return _finite_values(active[key]) if key in active else (fixed,)

    if not ({HEADS, DIM} & (set(active) | set(scenario))):
        return
    for d in values(DIM, arch.fusion.d):
        for heads in values(HEADS, arch.fusion.heads):
            if heads >= 1 and d >= 1 and d % heads:
                key = HEADS if HEADS in active or HEADS in scenario else DIM
                raise ConfigError(
                    f"space.{key}: `heads` must divide `d` for every pair sampled together, but got "
                    f"(heads={heads}, d={d}){_context(scenario)}; valid heads for d={d}: {valid_heads(d)}"
                )


def _check_coupled_pairs(base: dict[str, Any], scenario: Mapping[str, Any], active: Mapping[str, AxisInfo]) -> None:
    """Every pair of values of two coupled axes (see ``_COUPLED_AXES``) gives a valid run config;
    the probes pair only each axis's i-th values."""
    for first, second in _COUPLED_AXES:
        if first not in active or second not in active:
            continue  # one of them fixed: the probes try every value of the other against it
        for a in _finite_values(active[first]):
            for b in _finite_values(active[second]):
                message = _run_config_error(apply_overrides(base, {**scenario, first: a, second: b}))
                if message:
                    raise ConfigError(
                        f"space.{second}: every pair sampled together must be valid, but "
                        f"({first}={a!r}, {second}={b!r}){_context(scenario)} is not: {message}"
                    )


def _explain(
    base: dict[str, Any], info: SpaceInfo, scenario: dict[str, Any], params: dict[str, Any], message: str
) -> str:
    """Name the axis and value that make ``params`` an invalid run config."""
    axes = {axis.key: axis for axis in info.axes}
    for key, value in scenario.items():
        found = _run_config_error(apply_overrides(base, {key: value}))
        if found:
            return f"space.{key}: {_describe_value(axes[key], value)} gives an invalid run config: {found}"
    # heads and d go first and stay in every later probe: together they are known to be valid
    pair = {k: params[k] for k in (HEADS, DIM) if k in params and k not in scenario}
    for key in [*pair, *(k for k in params if k not in scenario and k not in pair)]:
        found = _run_config_error(apply_overrides(base, {**scenario, **pair, key: params[key]}))
        if found:
            what = _describe_value(axes[key], params[key])
            return f"space.{key}: {what} gives an invalid run config{_context(scenario)}: {found}"
    return f"space: the values {params} give an invalid run config together: {message}"


def _describe_value(axis: AxisInfo, value: Any) -> str:
    return f"choice {value!r}" if axis.kind == "choice" else f"range end {value!r}"


def _context(scenario: Mapping[str, Any]) -> str:
    return f" (with {', '.join(f'{k}={v!r}' for k, v in scenario.items())})" if scenario else ""


def _run_config_error(data: dict[str, Any]) -> str | None:
    try:
        RunConfig.model_validate(data)
    except ValidationError as err:
        return describe_validation_error(err, RunConfig)
    return None
