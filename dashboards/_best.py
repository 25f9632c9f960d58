"""The best config on the test split: confusion matrix, per-class scores, and the score with
each modality missing (what modality dropout is for).

Which trials: a search's chosen trials (``chosen``; the only ones scored on test), else its
best completed trial on validation; an ablation's best variant by mean score, pooled over
its seeds and folds.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from ._common import Unavailable
from ._loading import PREDICTIONS, Experiment, table_gap
from .run_report import RAVDESS_EMOTIONS

MISSING_PREFIX = "test_missing_"
_PER_EMOTION = re.compile(r"^test_(.+)_(accuracy|weighted_f1)$")


class BestTrials(NamedTuple):
    label: str
    trial_ids: list[str]
    tested: bool = True  # scored on the test split (False: a search's best so far, before it chose)


class ConfusionPanel(NamedTuple):
    task: str | None  # None for single-task datasets (RAVDESS)
    classes: list[str]
    matrix: list[list[int]]  # rows: true class, columns: predicted


class ConfusionInfo(NamedTuple):
    best: BestTrials
    panels: list[ConfusionPanel]


class PerClassInfo(NamedTuple):
    best: BestTrials
    classes: list[str]
    scores: dict[str, list[float | None]]  # measure -> one value per class


class MissingInfo(NamedTuple):
    scores: pl.DataFrame  # group, condition, score, n
    conditions: list[str]


def best_trials(exp: Experiment) -> BestTrials | None:
    """The trials whose test results stand for the experiment (see the module docstring)."""
    completed = exp.completed
    if not completed.height:
        return None
    if exp.kind == "ablation" and "variant" in completed.columns:
        metric = "test_score" if completed["test_score"].null_count() < completed.height else exp.metric
        means = completed.group_by("variant").agg(pl.col(metric).mean())
        means = means.sort(metric, "variant", descending=[True, False])
        variant = means["variant"][0]
        ids = completed.filter(pl.col("variant") == variant)["trial_id"].to_list()
        return BestTrials(f"best variant {variant!r} on {metric} ({len(ids)} runs pooled)", ids)
    if "chosen" in completed.columns:
        chosen = completed.filter(pl.col("chosen").cast(pl.Boolean, strict=False).fill_null(False))
        if chosen.height:
            ids = chosen["trial_id"].to_list()
            return BestTrials(f"chosen config (trial {', '.join(ids)})", ids)
    best = completed.sort(exp.metric, descending=True)["trial_id"][0]
    return BestTrials(f"best trial on validation ({best}; not yet scored on test)", [best], tested=False)


def _untested(exp: Experiment, best: BestTrials | None) -> Unavailable | None:
    """Why there are no test results to show: no completed trial, or a search that has not chosen yet."""
    if best is None:
        return Unavailable(f"no completed trial with a {exp.metric} yet")
    if not best.tested:
        return Unavailable(
            "no config is scored on test yet (the search scores the one it chooses once every trial has finished)"
        )
    return None


def _get_confusion_info(exp: Experiment) -> ConfusionInfo | Unavailable:
    """Unavailable when the best trials have no test predictions, saying why."""
    best = best_trials(exp)
    gap = table_gap(exp, PREDICTIONS.file) or _untested(exp, best)
    if gap:
        return gap
    assert best is not None  # _untested said so otherwise
    predictions = exp.predictions.filter((pl.col("split") == "test") & pl.col("trial_id").is_in(best.trial_ids))
    panels = []
    for (task,), rows in sorted(predictions.group_by("task"), key=lambda item: str(item[0][0] or "")):
        size = max(rows.select(pl.max("label"), pl.max("pred")).row(0)) + 1
        classes = _class_names(task, size)
        counts = rows.group_by("label", "pred").len()
        matrix = [[0] * len(classes) for _ in classes]
        for label, pred, n in counts.iter_rows():
            matrix[label][pred] = n
        panels.append(ConfusionPanel(task, classes, matrix))
    if not panels:
        return Unavailable(f"{PREDICTIONS.file} has no test predictions for the {best.label}")
    return ConfusionInfo(best, panels)


def _class_names(task: str | None, size: int) -> list[str]:
    if task is None and size <= len(RAVDESS_EMOTIONS):
        return list(RAVDESS_EMOTIONS)
    if task is not None and size == 2:
        return [f"not {task}", task]
    return [str(i) for i in range(size)]


def _get_confusion_plot(info: ConfusionInfo) -> go.Figure:
    titles = [p.task or "test split" for p in info.panels]
    fig = make_subplots(rows=1, cols=len(info.panels), subplot_titles=titles, horizontal_spacing=0.08)
    for i, panel in enumerate(info.panels, start=1):
        fig.add_trace(
            go.Heatmap(
                z=panel.matrix,
                x=panel.classes,
                y=panel.classes,
                colorscale="Blues",
                showscale=False,
                text=panel.matrix,
                texttemplate="%{text}",
                hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", title_text="true" if i == 1 else None, row=1, col=i)
        fig.update_xaxes(title_text="predicted", row=1, col=i)
    fig.update_layout(
        title=f"Confusion matrix on the test split: {info.best.label}", height=480 if len(info.panels) == 1 else 380
    )
    return fig


def _get_per_class_info(exp: Experiment) -> PerClassInfo | Unavailable:
    """Per-emotion accuracy and F1 columns (IEMOCAP), else per-class accuracy from the confusion matrix."""
    best = best_trials(exp)
    if best is None:
        return Unavailable(f"no completed trial with a {exp.metric} yet")
    rows = exp.trials.filter(pl.col("trial_id").is_in(best.trial_ids))
    # Numeric columns only: test_per_class_accuracy (a list per trial) matches the pattern too.
    scored = [c for c in rows.columns if rows[c].dtype.is_numeric() and rows[c].null_count() < rows.height]
    columns = {m.groups(): c for c in scored if (m := _PER_EMOTION.match(c))}
    emotions = list(dict.fromkeys(e for e, _ in columns))
    if emotions:
        scores = {
            measure: [rows.select(pl.mean(columns[(e, key)])).item() if (e, key) in columns else None for e in emotions]
            for measure, key in (("accuracy", "accuracy"), ("weighted F1", "weighted_f1"))
        }
        return PerClassInfo(best, emotions, scores)
    confusion = _get_confusion_info(exp)
    if isinstance(confusion, Unavailable):
        return confusion
    if confusion.panels[0].task is not None:
        return Unavailable(f"the {best.label} has no per-emotion test scores (test_<emotion>_accuracy columns)")
    panel = confusion.panels[0]
    recall = [row[i] / sum(row) if sum(row) else None for i, row in enumerate(panel.matrix)]
    return PerClassInfo(best, panel.classes, {"accuracy": recall})


def _get_per_class_plot(info: PerClassInfo) -> go.Figure:
    fig = go.Figure()
    for measure, values in info.scores.items():
        fig.add_trace(
            go.Bar(
                x=info.classes,
                y=values,
                name=measure,
                text=["" if v is None else f"{v:.2f}" for v in values],
                textposition="outside",
            )
        )
    fig.update_layout(
        title=f"Per-class scores on the test split: {info.best.label}",
        yaxis={"range": [0, 1.1], "title": "score"},
        barmode="group",
        height=400,
    )
    return fig


def _get_missing_info(exp: Experiment) -> MissingInfo | Unavailable:
    """Test score with all modalities and with each one missing; Unavailable without such scores."""
    columns = [c for c in exp.trials.columns if c.startswith(MISSING_PREFIX)]
    completed = exp.completed
    scored = completed.filter(pl.any_horizontal(pl.col(columns).is_not_null())) if columns else completed.head(0)
    if not scored.height:
        return _untested(exp, best_trials(exp)) or Unavailable(
            f"no completed trial was scored on test with a modality missing ({MISSING_PREFIX}<modality> columns)"
        )
    if exp.kind == "ablation" and "variant" in scored.columns:
        # A single-modality variant has nothing to drop: it keeps its all-modalities bar.
        scored = completed.filter(pl.col("test_score").is_not_null())
        group = pl.col("variant")
    else:
        best = best_trials(exp)
        chosen = scored.filter(pl.col("trial_id").is_in(best.trial_ids)) if best else scored.head(0)
        scored = chosen if chosen.height else scored.sort(exp.metric, descending=True).head(1)
        group = pl.lit("chosen config")
    names = {"test_score": "all modalities"} | {c: f"without {c.removeprefix(MISSING_PREFIX)}" for c in columns}
    scores = (
        scored.with_columns(group.alias("group"))
        .unpivot(index="group", on=list(names), variable_name="condition", value_name="score")
        .drop_nulls("score")
        .group_by("group", "condition", maintain_order=True)
        .agg(pl.col("score").mean(), pl.len().alias("n"))
        .with_columns(pl.col("condition").replace_strict(names))
    )
    return MissingInfo(scores, list(names.values()))


def _get_missing_plot(info: MissingInfo) -> go.Figure:
    fig = go.Figure()
    for (group,), rows in info.scores.group_by("group", maintain_order=True):
        fig.add_trace(
            go.Bar(
                x=rows["condition"].to_list(),
                y=rows["score"].to_list(),
                name=str(group),
                text=[f"{v:.3f}" for v in rows["score"]],
                textposition="outside",
                customdata=rows["n"].to_list(),
                hovertemplate="%{x}: %{y:.4f} (mean of %{customdata})<extra>" + str(group) + "</extra>",
            )
        )
    fig.update_layout(
        title="Test score with a modality missing (the reason for modality dropout)",
        xaxis={"categoryorder": "array", "categoryarray": info.conditions},
        yaxis={"range": [0, 1.1], "title": "test score"},
        barmode="group",
        height=400,
    )
    return fig


def plot_confusion_matrix(exp: Experiment) -> go.Figure | None:
    """Confusion matrix (one per task) of the best config on test; None without predictions."""
    info = _get_confusion_info(exp)
    return _get_confusion_plot(info) if isinstance(info, ConfusionInfo) else None


def plot_per_class(exp: Experiment) -> go.Figure | None:
    """Per-class accuracy (RAVDESS) or per-emotion accuracy and F1 (IEMOCAP) of the best config."""
    info = _get_per_class_info(exp)
    return _get_per_class_plot(info) if isinstance(info, PerClassInfo) else None


def plot_missing_modality(exp: Experiment) -> go.Figure | None:
    """Test score with each modality missing, per variant (ablation) or for the chosen config."""
    info = _get_missing_info(exp)
    return _get_missing_plot(info) if isinstance(info, MissingInfo) else None
