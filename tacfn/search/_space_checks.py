"""Checks that a search space makes valid run configs, run when the file loads (before Ray starts).

Every key an axis sets must be a searchable option of the base run config, with values of its
type; and every choice and both ends of every range must give a valid run config, in every
combination of ``when`` conditions (with ``heads`` dividing ``d`` for every pair that can be
sampled together); and ``search.sampler`` must be able to search the space (see
:mod:`._samplers`). The run config's own rules decide, so this module imports the model.
Errors are :class:`~tacfn.errors.ConfigError` with one line, ``key: rule``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ValidationError

from ..config import RunConfig
from ..errors import ConfigError, describe_validation_error
from ..model import TACFNConfig
from ..model.fusion import FusionConfig, get_fusion_block_class, valid_heads
from ..nested import apply_overrides
from ._space_compile import (
    DIM,
    FUSION_NAME,
    FUSION_PREFIX,
    HEADS,
    MAX_VALUES,
    AxisInfo,
    SpaceInfo,
    combinations,
    compile_space,
    finite_values,
)
from ._samplers import check_sampler
from ._space_schema import AxisSpec, SearchSettings, SearchSpec

# Axes valid only in pairs: a fold must exist in the protocol sampled with it.
_COUPLED_AXES = (("data.protocol", "data.fold"),)


def check_space(spec: SearchSpec) -> None:
    """Raise ConfigError, ``key: rule``, unless every trial ``spec`` can sample is a valid run config."""
    try:
        base = RunConfig.model_validate(spec.base)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, RunConfig, at="base")) from None
    arch = base.architecture()
    for key, axis in spec.space.items():
        _check_axis_type(key, axis, _base_value(key, base, arch))
    if FUSION_NAME not in spec.space:
        reads = get_fusion_block_class(arch.fusion.name).options
        for key in spec.space:
            option = key[len(FUSION_PREFIX):] if key.startswith(FUSION_PREFIX) else None
            if option is not None and option not in reads:
                raise ConfigError(
                    f"space.{key}: block {arch.fusion.name!r} does not read {option}, so it never matters; "
                    f"it reads {list(reads)}"
                )
    info = compile_space(spec)
    _check_combinations(spec.base, info, arch)
    _check_asha(spec.search, info, base)
    _check_replicates(spec)
    check_sampler(spec.search, info)


def _check_replicates(spec: SearchSpec) -> None:
    """A seed-aware search (``search.seeds`` or ``search.folds``) sets every replicate's seed and
    fold, the one left out to the base's: neither may be sampled too. Each value listed must be
    valid for the base."""
    if spec.search.seeds is None and spec.search.folds is None:
        return
    for setting, key in (("seeds", "train.seed"), ("folds", "data.fold")):
        values = getattr(spec.search, setting)
        if key in spec.space and values is not None:
            raise ConfigError(
                f"space.{key}: search.{setting} already trains every configuration on {values}; "
                f"remove {key} from space, or search.{setting}"
            )
        if key in spec.space:
            raise ConfigError(
                f"space.{key}: a seed-aware search trains every replicate on the base's {key} unless "
                f"search.{setting} lists them; remove {key} from space, and list its values in search.{setting}"
            )
        for value in values or []:
            problem = _run_config_error(apply_overrides(spec.base, {key: value}))
            if problem is not None:
                raise ConfigError(f"search.{setting}: {value} is not a valid {key} for this base: {problem}")


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
    for scenario in combinations((a for a in info.axes if a.key in parents), limit=MAX_VALUES):
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
        return finite_values(active[key]) if key in active else (fixed,)

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
        for a in finite_values(active[first]):
            for b in finite_values(active[second]):
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


def _test_values(axis: AxisInfo) -> tuple[Any, ...]:
    """The values validation tries: every choice, or both ends of a range."""
    if axis.kind == "choice":
        return axis.choices
    return (axis.low,) if axis.low == axis.high else (axis.low, axis.high)
