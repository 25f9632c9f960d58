"""The searched parameters: the axes of a search's ``space`` and each trial's sampled values.

A trial's sampled values are its ``param.<dotted key>`` columns, null where the search did
not sample the axis. Experiments from before them (schema version 1, resumed ones too)
keep only the config (``config.<dotted key>``), sampled or not: there, as a fallback, a
value counts as sampled when the axis's ``when`` conditions hold for the trial and the
value lies inside the axis (a base value outside the range was never sampled). That guess
takes a base value inside the axis for a sampled one where the search added a condition
the spec does not state: heads set by ``base``, for a block without attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from tacfn.search import AxisInfo
from tacfn.store import CONFIG_PREFIX, PARAM_PREFIX


class Axis(AxisInfo):
    """One axis of a search space (the search layer's :class:`~tacfn.search.AxisInfo`, built
    from the spec as written: ``when`` holds the file's conditions only), with the names the
    views draw it under."""

    __slots__ = ()

    @property
    def column(self) -> str:
        """The trial's config value, sampled or not."""
        return CONFIG_PREFIX + self.key

    @property
    def param_column(self) -> str:
        """The value the search sampled, null where it did not sample the axis."""
        return PARAM_PREFIX + self.key

    @property
    def label(self) -> str:
        """The key without its section for axis titles (``model.fusion.heads`` -> ``fusion.heads``)."""
        return self.key.split(".", 1)[1] if self.key.count(".") > 1 else self.key


def space_axes(spec: Mapping[str, Any]) -> list[Axis]:
    """The axes of ``spec["space"]`` in file order; entries of no known kind are left out."""
    space = spec.get("space")
    axes = []
    for key, entry in (space.items() if isinstance(space, Mapping) else ()):
        if not isinstance(entry, Mapping):
            continue
        when = tuple((k, tuple(v)) for k, v in (entry.get("when") or {}).items() if isinstance(v, list))
        if isinstance(entry.get("choice"), list):
            axes.append(Axis(key, "choice", choices=tuple(entry["choice"]), when=when))
            continue
        kind = next((k for k in ("int", "float") if _is_range(entry.get(k))), None)
        if kind:
            low, high = (float(v) for v in entry[kind])
            step = entry.get("step")
            axes.append(Axis(key, kind, low=low, high=high, step=step, log=bool(entry.get("log")), when=when))
    return axes


def _is_range(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)


def choice_labels(values: tuple[Any, ...], dtype: pl.DataType) -> list[str]:
    """Choices as the strings their store column casts to, so ``4`` matches an int64 ``4``."""
    labels = []
    for value in values:
        cast = pl.Series([value]).cast(dtype, strict=False).cast(pl.Utf8)[0]
        labels.append(cast if cast is not None else str(value))
    return labels


def param_frame(trials: pl.DataFrame, axes: list[Axis], ids: str = "trial_id") -> pl.DataFrame:
    """The ``ids`` column (``config_hash`` for a seed-aware search's configurations) and one
    column per axis key: the sampled value, or null where not sampled (read as the module
    docstring says).

    Choice axes become string labels (see :func:`choice_labels`), numeric axes Float64.
    """
    return trials.select(pl.col(ids), *(_sampled(trials, axis).alias(axis.key) for axis in axes))


def _sampled(trials: pl.DataFrame, axis: Axis) -> pl.Expr:
    """The axis's ``param.*`` column, or the fallback from its config for an old experiment."""
    column = _source(trials, axis)
    if column not in trials.columns:
        return pl.lit(None, dtype=pl.Utf8 if axis.kind == "choice" else pl.Float64)
    value = pl.col(column).cast(pl.Utf8) if axis.kind == "choice" else pl.col(column).cast(pl.Float64, strict=False)
    if column == axis.param_column:
        return value
    inside = value.is_in(choice_labels(axis.choices, trials.schema[column])) if axis.kind == "choice" else _inside(value, axis)
    return pl.when(_when(trials, axis) & inside).then(value).otherwise(None)


def _source(trials: pl.DataFrame, axis: Axis) -> str:
    """The column an axis's values are read from: ``param.*`` when recorded, else ``config.*``."""
    return axis.param_column if axis.param_column in trials.columns else axis.column


def _inside(value: pl.Expr, axis: Axis) -> pl.Expr:
    """Within ``[low, high]`` and, for an axis with a ``step``, on its grid (1e-9 relative tolerance)."""
    tolerance = 1e-9 * max(axis.high - axis.low, 1e-12)
    inside = value.is_between(axis.low - tolerance, axis.high + tolerance)
    if axis.step and not axis.log:
        steps = (value - axis.low) / axis.step
        inside = inside & ((steps - steps.round()).abs() * axis.step <= tolerance)
    return inside


def _when(trials: pl.DataFrame, axis: Axis) -> pl.Expr:
    """True for the trials where every ``when`` condition of the axis holds."""
    active = pl.lit(True)
    for key, values in axis.when:
        column = CONFIG_PREFIX + key
        if column not in trials.columns:
            return pl.lit(False)
        labels = choice_labels(values, trials.schema[column])
        active = active & pl.col(column).cast(pl.Utf8).is_in(labels).fill_null(False)
    return active


def categories(trials: pl.DataFrame, axis: Axis) -> list[str]:
    """A choice axis's categories in spec order, labelled as :func:`param_frame` labels values."""
    dtype: pl.DataType = trials.schema.get(_source(trials, axis)) or pl.Utf8()
    return list(dict.fromkeys(choice_labels(axis.choices, dtype)))
