"""Learning curves: per config (search) or variant (ablation), the mean over seeds and folds
with a band of one standard deviation, for validation and training."""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from ._common import Unavailable, showing
from ._loading import EPOCHS, Experiment, table_gap

TOP_K = 8
SERIES = {"val_score": "validation", "train_score": "train"}
FUSION = "config.model.fusion.name"


class CurvesInfo(NamedTuple):
    curves: pl.DataFrame  # group, series, epoch, mean, std, n
    groups: list[str]  # best first
    total_groups: int
    what: str  # "configs" or "variants"


def _get_curves_info(exp: Experiment, top_k: int = TOP_K) -> CurvesInfo | Unavailable:
    """The ``top_k`` best groups by mean metric; Unavailable when no completed trial has epochs."""
    completed = exp.completed
    gap = table_gap(exp, EPOCHS.file)
    if gap:
        return gap
    if not completed.height:
        return Unavailable(f"no completed trial with a {exp.metric} yet")
    labelled = completed.with_columns(_group_label(exp, completed).alias("group"))
    ranked = (
        labelled.group_by("group")
        .agg(pl.col(exp.metric).mean().alias("score"))
        .sort("score", "group", descending=[True, False])
    )
    groups = ranked["group"].head(top_k).to_list()
    members = labelled.filter(pl.col("group").is_in(groups)).select("trial_id", "group")
    series = [s for s in SERIES if s in exp.epochs.columns]
    curves = (
        exp.epochs.join(members, on="trial_id")
        .unpivot(index=["group", "epoch"], on=series, variable_name="series", value_name="score")
        .drop_nulls("score")
        .group_by("group", "series", "epoch")
        .agg(pl.col("score").mean().alias("mean"), pl.col("score").std().alias("std"), pl.len().alias("n"))
        .sort("group", "series", "epoch")
    )
    if not curves.height:
        scores = " or ".join(SERIES)
        return Unavailable(f"{EPOCHS.file} has no {scores} for the completed trials ({exp.epochs.height} rows in all)")
    return CurvesInfo(curves, groups, ranked.height, "variants" if exp.kind == "ablation" else "configs")


def _group_label(exp: Experiment, trials: pl.DataFrame) -> pl.Expr:
    """An ablation's variant; for a search, the config (hash) labelled with its fusion block."""
    if exp.kind == "ablation" and "variant" in trials.columns:
        return pl.col("variant").fill_null("?")
    key = pl.coalesce(pl.col("config_hash").str.slice(0, 8), pl.col("trial_id"))
    if FUSION in trials.columns:
        return pl.concat_str(pl.col(FUSION).cast(pl.Utf8).fill_null("?"), pl.lit(" "), key)
    return key


def _get_curves_plot(info: CurvesInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=[f"{name} score" for name in SERIES.values()], shared_yaxes=True)
    colors = qualitative.Plotly
    for g, group in enumerate(info.groups):
        color = colors[g % len(colors)]
        for col, (series, name) in enumerate(SERIES.items(), start=1):
            rows = info.curves.filter((pl.col("group") == group) & (pl.col("series") == series))
            if not rows.height:
                continue
            epochs, mean = rows["epoch"].to_list(), rows["mean"].to_list()
            banded = rows.filter(pl.col("n") > 1)
            if banded.height:
                upper = (banded["mean"] + banded["std"]).to_list()
                lower = (banded["mean"] - banded["std"]).to_list()
                band_x = banded["epoch"].to_list()
                fig.add_trace(
                    go.Scatter(
                        x=band_x + band_x[::-1],
                        y=upper + lower[::-1],
                        mode="lines",  # the band only: plotly marks each point of a short trace by default
                        fill="toself",
                        fillcolor=color,
                        opacity=0.15,
                        line={"width": 0},
                        hoverinfo="skip",
                        showlegend=False,
                        legendgroup=group,
                    ),
                    row=1,
                    col=col,
                )
            fig.add_trace(
                go.Scatter(
                    x=epochs,
                    y=mean,
                    mode="lines",
                    line={"color": color, "dash": "solid" if series == "val_score" else "dot"},
                    name=group,
                    legendgroup=group,
                    showlegend=col == 1,
                    customdata=rows["n"].to_list(),
                    hovertemplate=f"{group}<br>epoch %{{x}}: %{{y:.4f}} (mean of %{{customdata}})<extra>{name}</extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="score", col=1)
    fig.update_layout(
        title=f"Learning curves of the best {info.what} ({showing(len(info.groups), info.total_groups, info.what)}; "
        "mean over seeds and folds, band = 1 std)",
        height=440,
    )
    return fig


def plot_learning_curves(exp: Experiment, top_k: int = TOP_K) -> go.Figure | None:
    """Validation and train score per epoch for the best configs or variants; None without epochs."""
    info = _get_curves_info(exp, top_k)
    return _get_curves_plot(info) if isinstance(info, CurvesInfo) else None
