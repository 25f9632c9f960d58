"""Each ablation variant's scores against the ceilings its data allow.

On synthetic data the experiment records which effects the data plant and the best accuracy
each model family can reach on them (``experiment.json``'s ``dataset``; see
:func:`tacfn.data.synth.planted_ceilings`). Drawing every (seed, fold) score beside those
ceilings shows at a glance whether a variant reached what its family can read: a verdict
can then be checked against the truth that was planted.
"""

from __future__ import annotations

from typing import NamedTuple

import plotly.graph_objects as go
import polars as pl

from ._ablation import KEYS, AblationInfo, _get_ablation_info
from ._common import Unavailable
from ._loading import Experiment

_CEILING_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")


class AblationScoresInfo(NamedTuple):
    """``runs``: one row per (variant, seed, fold) with its ``score``; ``order``: the variants,
    baseline first; ``ceilings``: family -> best reachable score (empty for real data);
    ``effects``: the planted effects, or None for real data."""

    runs: pl.DataFrame
    order: list[str]
    metric: str
    ceilings: dict[str, float]
    effects: list[str] | None


def _get_ablation_scores_info(exp: Experiment, metric: str | None = None) -> AblationScoresInfo | Unavailable | None:
    """None unless this is an ablation; Unavailable until it has completed, scored runs."""
    table = _get_ablation_info(exp, metric)
    if not isinstance(table, AblationInfo):
        return table
    runs = (
        exp.completed.filter(pl.col(table.metric).is_not_null())
        .with_columns(pl.col(KEYS).fill_null(-1))
        .group_by("variant", *KEYS, maintain_order=True)
        .agg(pl.col(table.metric).mean().alias("score"))
    )
    effects = exp.dataset.get("planted_effects")
    ceilings = exp.dataset.get("ceilings") if table.metric.startswith(("test_score", "val_score")) else None
    return AblationScoresInfo(
        runs=runs,
        order=table.table["variant"].to_list(),
        metric=table.metric,
        ceilings={str(k): float(v) for k, v in (ceilings or {}).items()},
        effects=list(effects) if isinstance(effects, list) else None,
    )


def _get_ablation_scores_plot(info: AblationScoresInfo) -> go.Figure:
    fig = go.Figure()
    for variant in info.order:
        scores = info.runs.filter(pl.col("variant") == variant)
        if not scores.height:
            continue
        fig.add_trace(
            go.Box(
                x=scores["score"].to_list(),
                y=[variant] * scores.height,
                name=variant,
                orientation="h",
                boxpoints="all",
                jitter=0.4,
                pointpos=0,
                customdata=list(zip(scores["seed"], scores["fold"])),
                hovertemplate="%{y}: %{x:.3f} (seed %{customdata[0]}, fold %{customdata[1]})<extra></extra>",
                showlegend=False,
            )
        )
    by_value: dict[float, list[str]] = {}
    for family, ceiling in info.ceilings.items():  # families that share a ceiling share its line
        by_value.setdefault(ceiling, []).append(family)
    for (ceiling, families), color in zip(sorted(by_value.items()), _CEILING_COLORS):
        fig.add_vline(
            x=ceiling, line_dash="dot", line_color=color,
            annotation_text=f"{' / '.join(families)}: {ceiling:.2f}", annotation_position="top",
            annotation_font_color=color, annotation_font_size=11,
        )
    planted = f"the data plant {', '.join(info.effects)}" if info.effects else "real data: no planted ceilings"
    fig.update_layout(
        title=f"{info.metric} of every (seed, fold) run per variant; {planted}",
        xaxis_title=info.metric,
        xaxis={"range": [0, 1.05]},
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": info.order[::-1]},
        height=220 + 45 * len(info.order),
        margin={"t": 100},
    )
    return fig


def plot_ablation_scores(exp: Experiment, metric: str | None = None) -> go.Figure | None:
    """Every variant's per-run scores, with each model family's ceiling on planted data; None for searches."""
    info = _get_ablation_scores_info(exp, metric)
    return _get_ablation_scores_plot(info) if isinstance(info, AblationScoresInfo) else None
