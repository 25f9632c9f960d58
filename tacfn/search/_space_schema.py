"""The schema of a search-space file: what each key may hold, checked when the file loads.

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
      scheduler: asha                # asha | none (none, and not asha, for a seed-aware search)
      asha: {grace_period: 1, reduction_factor: 2}
      seed: 0                        # seeds the sampler
      sampler: tpe                   # tpe | gp | cmaes | random | qmc; tpe | nsga2 with objectives
      resources: {cpu: 1, gpu: 0}    # per trial (per worker when workers > 1); gpu may be 0.25
      workers: 1                     # Ray Train workers per trial (>1: DDP)
      objectives: []                 # extra objectives to minimise: num_parameters | latency_ms
      loggers: [mlflow, wandb, tensorboard]   # experiment trackers, opt in (see tacfn.trackers)
      seeds: [0, 1, 2]               # seed-aware: every configuration trains on each seed (and fold)
      folds: [0]                     # default: the base's data.fold
      aggregate: mean                # a configuration's value over its replicates: mean | lcb
      racing: {test: t, level: 0.1}  # stop a configuration clearly worse than the incumbent: t | wilcoxon | none

An axis is exactly one of ``choice: [values]``, ``int: [low, high]`` (optional ``step``, or
``log: true``) and ``float: [low, high]`` (optional ``step`` or ``log: true``); ranges include
both ends. ``when: {other.key: [values]}`` samples the axis only in trials where every named axis
was sampled with one of the listed values. ``model.fusion.heads`` is sampled only for blocks
with attention when ``model.fusion.name`` is an axis. A key that is not sampled keeps its base
value. Which samplers can search which spaces is :mod:`._samplers`' to say.

This module checks each key on its own (ranges, steps, finite numbers, folder names); whether
the axes make valid run configs is :mod:`._space_checks`' job. It imports neither torch nor the
model, so code that only reads a space (the dashboards) stays light.
"""

from __future__ import annotations

import math
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from ..replicates import Aggregate, RacingTest
from ..trackers._schema import Trackers

Metric = Literal["val_score", "val_weighted_f1"]  # maximised
Objective = Literal["num_parameters", "latency_ms"]  # minimised
Sampler = Literal["tpe", "gp", "cmaes", "random", "qmc", "nsga2"]  # Optuna's, see ._samplers
METRICS: tuple[str, ...] = get_args(Metric)
OBJECTIVES: tuple[str, ...] = get_args(Objective)
SAMPLERS: tuple[str, ...] = get_args(Sampler)

Scalar = StrictBool | StrictInt | StrictFloat | StrictStr | None
AxisKind = Literal["choice", "int", "float"]


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
        bounds = self.int_range or self.float_range
        assert bounds is not None  # exactly one of the three is given, and it is not `choice`
        low, high = bounds
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


class RacingSettings(_Strict):
    """Racing a seed-aware search's configurations: after each replicate, a one-sided paired
    test (``t`` or ``wilcoxon``, see :func:`tacfn.replicates.racing_p_value`) against the
    incumbent on the replicates both have; below ``level`` the configuration stops early."""

    test: RacingTest = "t"
    level: float = Field(0.1, gt=0, lt=1)


def _distinct(values: list[int] | None, key: str) -> list[int] | None:
    if values is None:
        return None
    if not values:
        raise ValueError(f"`{key}` must list at least one value, but got []")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"`{key}` must be distinct, but {repeated} repeat (a replicate would count twice)")
    return values


class SearchSettings(_Strict):
    """How to search: objective, budget, scheduler, sampler and its seed, resources and failure policy.

    ``max_failures`` is how many times a trial whose process or node dies is restarted
    from its last checkpoint before it is recorded as failed. A trial checkpoints when
    ``checkpoint_interval_s`` have passed since its last checkpoint (0: after every epoch)
    and after its last epoch. ``loggers`` names the experiment trackers each trial logs to
    (:mod:`tacfn.trackers`). ``seeds`` and ``folds`` make the search seed-aware: each
    configuration trains on every (seed, fold) replicate, is valued at the ``aggregate`` of
    them and raced against the incumbent (``racing``); see :mod:`tacfn.search._seed_aware`.
    """

    metric: Metric = "val_score"
    trials: int = Field(16, ge=1)
    concurrency: int = Field(1, ge=1)
    scheduler: Literal["asha", "none"] = "asha"
    asha: AshaSettings = Field(default_factory=AshaSettings)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's and Optuna's seed range
    sampler: Sampler = "tpe"
    resources: Resources = Field(default_factory=Resources)
    workers: int = Field(1, ge=1)
    objectives: list[Objective] = Field(default_factory=list)
    max_failures: int = Field(2, ge=0)
    checkpoint_interval_s: float = Field(30.0, ge=0)
    loggers: Trackers | None = None
    seeds: list[StrictInt] | None = None
    folds: list[StrictInt] | None = None
    aggregate: Aggregate = "mean"
    racing: RacingSettings = Field(default_factory=RacingSettings)

    @model_validator(mode="before")
    @classmethod
    def _races_instead_of_asha(cls, data: Any) -> Any:
        """A seed-aware search without a ``scheduler`` runs none: racing stops configurations early."""
        if isinstance(data, dict) and "scheduler" not in data:
            replicates = [len(v) if isinstance(v, list) and v else 1 for v in (data.get("seeds"), data.get("folds"))]
            if replicates[0] * replicates[1] > 1:
                return {**data, "scheduler": "none"}
        return data

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return _distinct(seeds, "seeds")

    @field_validator("folds")
    @classmethod
    def _distinct_folds(cls, folds: list[int] | None) -> list[int] | None:
        return _distinct(folds, "folds")

    @property
    def replicates(self) -> int:
        """Replicates per configuration (1: a search as without ``seeds`` and ``folds``)."""
        return len(self.seeds or [0]) * len(self.folds or [0])

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        if self.aggregate == "lcb" and self.replicates < 2:
            raise ValueError(
                f"`aggregate: lcb` needs two or more replicates to bound, but got {self.replicates} "
                f"(seeds={self.seeds}, folds={self.folds}); list more seeds, or use aggregate: mean"
            )
        if self.replicates > 1 and self.scheduler == "asha":
            raise ValueError(
                f"a seed-aware search (seeds={self.seeds}, folds={self.folds}) races whole replicates against the "
                "incumbent (search.racing) instead of ASHA, which would stop replicates on one seed's early epochs; "
                "use scheduler: none"
            )
        if self.replicates > 1 and self.objectives:
            raise ValueError(
                f"a seed-aware search (seeds={self.seeds}, folds={self.folds}) has one objective, "
                f"but got objectives={self.objectives}"
            )
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
