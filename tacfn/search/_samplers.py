"""The search's Optuna sampler: ``search.sampler`` names it and ``search.seed`` seeds it.

:func:`check_sampler` refuses, before Ray starts, a sampler that cannot search the space;
:func:`create_sampler` builds it. What each does with a conditional axis (one with ``when``,
or a fusion option of a space that samples ``model.fusion.name``), as Optuna 5.1 does it:

- ``tpe`` (``TPESampler``, the default): TPE models each conditional axis on the trials that
  sampled it; with one objective, the axes every trial samples are modelled jointly
  (multivariate TPE). Learns from pruned trials too, as worse than every completed one.
- ``gp`` (``GPSampler``): a Gaussian process over the axes every completed trial sampled;
  conditional axes are sampled at random (its independent sampler), and pruned trials are
  not learned from. Suits a small budget of expensive trials.
- ``random`` (``RandomSampler``): every axis at random.
- ``cmaes`` (``CmaEsSampler``): CMA-ES over the int and float ranges; choice axes are
  sampled at random. Refused on a conditional space: once a trial leaves a range out, its
  saved optimizer no longer fits the space and every later trial is random. Refused on a
  space without a range: there is nothing for CMA-ES to search.
- ``qmc`` (``QMCSampler``, scrambled Sobol): a low-discrepancy sequence over the first
  trial's axes. Refused on a conditional space: axes the first trial left out would be
  random, and the sequence would cover axes later trials leave out.
- ``nsga2`` (``NSGAIISampler``, made to pickle): multi-objective searches only, as the choice beside
  ``tpe``; conditional axes are sampled at random (outside its crossover), and its first
  generation (50 trials, Optuna's default population) is random.

Samplers other than TPE leave conditional axes to random sampling quietly: Optuna's
per-trial warning would repeat it for every such axis of every trial.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import optuna

from ..errors import ConfigError
from ._space_compile import AxisInfo, SpaceInfo
from ._space_schema import SAMPLERS, SearchSettings

MULTI_OBJECTIVE = ("tpe", "nsga2")  # the samplers of a search with objectives
FIXED_SPACE = ("cmaes", "qmc")  # the samplers that need every trial to sample the same axes


def check_sampler(settings: SearchSettings, info: SpaceInfo) -> None:
    """Raise ConfigError, ``search.sampler: rule``, unless ``settings.sampler`` can search
    ``info`` with ``settings.objectives``."""
    name = settings.sampler
    if settings.objectives and name not in MULTI_OBJECTIVE:
        raise ConfigError(
            f"search.sampler: a multi-objective search (search.objectives: {list(settings.objectives)}) "
            f"samples with {' or '.join(MULTI_OBJECTIVE)}, not {name}"
        )
    if not settings.objectives and name == "nsga2":
        single = [s for s in SAMPLERS if s != "nsga2"]
        raise ConfigError(
            f"search.sampler: nsga2 searches multi-objective spaces, and this one has no search.objectives; "
            f"use {', '.join(single[:-1])} or {single[-1]}"
        )
    conditional = next((axis for axis in info.axes if axis.when), None)
    if conditional is not None and name in FIXED_SPACE:
        raise ConfigError(
            f"search.sampler: {name} cannot sample conditional spaces ({_condition(conditional)}); use tpe, gp or random"
        )
    if name == "cmaes" and all(axis.kind == "choice" for axis in info.axes):
        raise ConfigError(
            "search.sampler: cmaes searches int and float ranges, and this space has none "
            "(it would sample every choice at random); use tpe, gp or random"
        )


def _condition(axis: AxisInfo) -> str:
    """``key is sampled only when parent is in [...]`` for a conditional axis."""
    when = " and ".join(f"{parent} is {' or '.join(map(str, values))}" for parent, values in axis.when)
    return f"{axis.key} is sampled only when {when}"


def create_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler ``settings.sampler`` names, seeded with ``settings.seed``.

    Two studies of one space with the same seed sample the same parameters (trial by trial,
    when trials run one at a time).
    """
    samplers = optuna.samplers
    seed = settings.seed
    name = settings.sampler
    if name == "tpe":
        return samplers.TPESampler(seed=seed)
    if name == "gp":
        return samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return samplers.RandomSampler(seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():  # experimental since Optuna 3.0, and said so on every search
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if name == "nsga2":
        return _NSGAIISampler(seed=seed)
    raise AssertionError(f"search.sampler {name!r} is not one of {SAMPLERS}")  # the schema allows only SAMPLERS


class _NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGAIISampler, made to pickle: Tune pickles the searcher, sampler and all, when
    the search starts and at every snapshot, and Optuna 5.1's keeps a ``threading.Lock`` (its
    generation cache's), which pickle refuses. The lock is left out and a new one made."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_thread_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()

