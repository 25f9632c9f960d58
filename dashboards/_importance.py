"""Parameter importance with Optuna's PED-ANOVA evaluator (no scikit-learn needed).

The completed trials become an in-memory Optuna study: each trial's sampled values (see
:mod:`dashboards._params`) with distributions from the spec's ``space``, and the metric as
its value. PED-ANOVA measures how much each parameter's distribution among the best trials
differs from its distribution among all; Optuna recommends at least 5 trials in that top
group, so the top quantile is 10% of the trials, raised to 5 trials for small searches.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._common import Unavailable
from ._loading import Experiment
from ._params import Axis, categories, param_frame, space_axes

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

MIN_TRIALS = 10
TOP_TRIALS = 5


class ImportanceInfo(NamedTuple):
    importances: pl.DataFrame  # param, importance (normalised to sum to 1), most important first
    metric: str
    n_trials: int
    target_quantile: float


def _get_importance_info(exp: Experiment) -> ImportanceInfo | Unavailable:
    """Unavailable with fewer than MIN_TRIALS completed trials, no searched axis that varies,
    or when PED-ANOVA finds every importance 0 (Optuna would then call them all equal)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    completed = exp.completed
    if completed.height < MIN_TRIALS:
        return Unavailable(
            f"needs at least {MIN_TRIALS} completed trials with a {exp.metric}; this experiment has {completed.height}"
        )
    searched = space_axes(exp.spec)
    if not searched:
        return Unavailable("the experiment's spec has no search space (space) to rank")
    params = param_frame(completed, searched)
    axes = [a for a in searched if params[a.key].drop_nulls().n_unique() > 1]
    if not axes:
        keys = ", ".join(a.key for a in searched)
        return Unavailable(f"needs an axis with more than one value; none of {keys} takes two in the completed trials")
    distributions = {a.key: _distribution(completed, a) for a in axes}
    trials = [
        optuna.trial.create_trial(
            params={k: _value(distributions[k], v) for k, v in row.items() if k in distributions and v is not None},
            distributions={k: distributions[k] for k, v in row.items() if k in distributions and v is not None},
            value=score,
        )
        for row, score in zip(params.iter_rows(named=True), completed[exp.metric].to_list())
    ]
    quantile = min(0.5, max(0.1, TOP_TRIALS / len(trials)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize")
        study.add_trials(trials)
        with warnings.catch_warnings():
            # "Some regimes have less than 2 trials": the title states n. "Target and region
            # quantiles select the same set of trials": every importance is 0, said below.
            warnings.filterwarnings("ignore", message="Some regimes", category=UserWarning)
            warnings.filterwarnings("ignore", message="Target and region quantiles", category=UserWarning)
            # The evaluator's raw values: get_param_importances would turn all zeros into equal shares.
            found = PedAnovaImportanceEvaluator(target_quantile=quantile).evaluate(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    total = sum(found.values())
    if not total > 0:
        return Unavailable(
            f"PED-ANOVA finds no axis whose values differ between the top {quantile:.0%} of trials and all "
            f"{len(trials)} (every importance is 0: are the scores all equal?)"
        )
    table = pl.DataFrame(
        {"param": list(found), "importance": [float(v) / total for v in found.values()]},
        schema={"param": pl.Utf8, "importance": pl.Float64},
    ).sort("importance", descending=True)
    return ImportanceInfo(table, exp.metric, len(trials), quantile)


def _distribution(trials: pl.DataFrame, axis: Axis) -> BaseDistribution:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if axis.kind == "choice":
        return CategoricalDistribution(categories(trials, axis))
    if axis.kind == "int":
        step = int(axis.step) if axis.step and not axis.log else 1
        return IntDistribution(int(axis.low), int(axis.high), log=axis.log, step=step)
    float_step = float(axis.step) if axis.step and not axis.log else None
    return FloatDistribution(axis.low, axis.high, log=axis.log, step=float_step)


def _value(distribution: BaseDistribution, value: Any) -> Any:
    from optuna.distributions import IntDistribution

    return int(value) if isinstance(distribution, IntDistribution) else value


def _get_importance_plot(info: ImportanceInfo) -> go.Figure:
    rows = info.importances.reverse()  # most important at the top
    fig = go.Figure(
        go.Bar(
            x=rows["importance"].to_list(),
            y=rows["param"].to_list(),
            orientation="h",
            text=[f"{v:.2f}" for v in rows["importance"]],
            textposition="outside",
            marker_color="#1f77b4",
        )
    )
    fig.update_layout(
        title=f"Parameter importance for {info.metric} (PED-ANOVA; top {info.target_quantile:.0%} "
        f"of {info.n_trials} completed trials vs all)",
        xaxis={"title": "importance (sums to 1)", "range": [0, 1.1]},
        height=120 + 40 * rows.height,
        margin={"l": 160},
    )
    return fig


def param_importances(exp: Experiment) -> dict[str, float]:
    """PED-ANOVA importance of each searched axis, most important first (empty below MIN_TRIALS)."""
    info = _get_importance_info(exp)
    return dict(info.importances.iter_rows()) if isinstance(info, ImportanceInfo) else {}


def plot_param_importances(exp: Experiment) -> go.Figure | None:
    """Bars of :func:`param_importances`; None when there are too few trials."""
    info = _get_importance_info(exp)
    return _get_importance_plot(info) if isinstance(info, ImportanceInfo) else None
