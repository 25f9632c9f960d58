"""The dashboard page: every view of one or more experiments in one self-contained HTML file.

plotly.js is inlined once and the figures travel as one JSON block that the page's script
(:mod:`dashboards._script`) draws, so the file opens offline and fetches nothing. What
cannot be drawn is said on the page: unreadable files and experiment progress as notices at
the top of the experiment's section, and a view that fails as an error notice in its place.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import plotly.offline

from tacfn.store import Location

from ._ablation import plot_ablation_forest, plot_ablation_table
from ._ablation_scores import plot_ablation_scores
from ._best import plot_confusion_matrix, plot_missing_modality, plot_per_class
from ._common import check_page_output, write_page
from ._compare import display_names, plot_compare
from ._curves import plot_learning_curves
from ._history import plot_optimization_history
from ._importance import plot_param_importances
from ._leaderboard import plot_leaderboard
from ._loading import Experiment, Notice, load_experiment, notices, planned_trials
from ._parallel import plot_parallel_coordinate
from ._pareto import plot_pareto_front
from ._script import SCRIPT, STYLE
from ._slices import plot_slice
from ._timeline import plot_timeline

PAGE_TOP_K = 25
POLL_MS = 2000


class _ViewSpec(NamedTuple):
    name: str  # the div id is "<section id>-<name>"
    build: Callable[[Experiment], go.Figure | None]  # None: nothing to show for this experiment
    crossfilter: str | None = None  # "points", "parcoords" or "table": takes part in cross-filtering


def _leaderboard(exp: Experiment) -> go.Figure | None:
    return plot_leaderboard(exp, PAGE_TOP_K) if exp.trials.height else None


_LEADERBOARD = _ViewSpec("leaderboard", _leaderboard, "table")
_HISTORY = _ViewSpec("history", plot_optimization_history, "points")
_CURVES = _ViewSpec("curves", plot_learning_curves)
_CONFUSION = _ViewSpec("confusion", plot_confusion_matrix)
_PER_CLASS = _ViewSpec("per-class", plot_per_class)
_MISSING = _ViewSpec("missing-modality", plot_missing_modality)
_TIMELINE = _ViewSpec("timeline", plot_timeline, "points")

VIEWS: dict[str | None, list[_ViewSpec]] = {
    "search": [
        _LEADERBOARD,
        _HISTORY,
        _ViewSpec("parallel", plot_parallel_coordinate, "parcoords"),
        _ViewSpec("slices", plot_slice, "points"),
        _ViewSpec("importance", plot_param_importances),
        _ViewSpec("pareto", plot_pareto_front, "points"),
        _CURVES,
        _CONFUSION,
        _PER_CLASS,
        _MISSING,
        _TIMELINE,
    ],
    "ablation": [
        _ViewSpec("ablation-table", plot_ablation_table),
        _ViewSpec("ablation-forest", plot_ablation_forest),
        _ViewSpec("ablation-scores", plot_ablation_scores),
        _CURVES,
        _MISSING,
        _CONFUSION,
        _PER_CLASS,
        _LEADERBOARD,
        _TIMELINE,
    ],
    None: [_LEADERBOARD, _HISTORY, _CURVES, _TIMELINE],  # experiment.json unreadable: no spec
}


class View(NamedTuple):
    id: str
    name: str
    figure: go.Figure


class Section(NamedTuple):
    id: str
    title: str
    meta: str
    notices: list[Notice]
    views: list[View]


def experiment_section(exp: Experiment, section_id: str) -> Section:
    """Every view that applies to the experiment; a view that fails becomes an error notice."""
    found = notices(exp)
    views = []
    for spec in VIEWS[exp.kind]:
        try:
            figure = spec.build(exp)
        except Exception as exc:  # one broken view must not take the page down: say what broke
            found.append(Notice("error", f"The {spec.name} view could not be drawn ({type(exc).__name__}: {exc})"))
            continue
        if figure is not None:
            if spec.crossfilter:
                figure.update_layout(meta={**(figure.layout.meta or {}), "crossfilter": spec.crossfilter})
            views.append(View(f"{section_id}-{spec.name}", spec.name, figure))
    planned = planned_trials(exp)
    parts = [str(exp.root), f"{exp.trials.height} trials" + (f" of {planned} planned" if planned else "")]
    effects = exp.dataset.get("planted_effects")
    if isinstance(effects, list):
        parts.append(f"synthetic data planting {', '.join(map(str, effects))}")
    if exp.created_at:
        parts.append(f"created {exp.created_at}")
    if exp.git_commit:
        parts.append(f"commit {exp.git_commit[:10]}")
    return Section(section_id, exp.title, " · ".join(parts), found, views)


def comparison_section(exps: Sequence[Experiment]) -> Section:
    """Histories and score distributions of several experiments side by side."""
    figure = plot_compare(exps)
    title = f"Comparison of {len(exps)} experiments"
    return Section("compare", title, ", ".join(display_names(exps)), [], [View("compare-view", "compare", figure)])


def build_sections(exp_dirs: Sequence[str | Path]) -> list[Section]:
    """Load each folder (DataError if one is not an experiment) and lay out its views."""
    exps = [load_experiment(d) for d in exp_dirs]
    sections = [comparison_section(exps)] if len(exps) > 1 else []
    return sections + [experiment_section(e, f"exp{i}") for i, e in enumerate(exps)]


def _notices_html(found: list[Notice]) -> str:
    role = {"error": "alert", "warning": "alert", "info": "status"}
    return "".join(
        f'<div class="notice notice-{n.level}" role="{role.get(n.level, "status")}">{html.escape(n.text)}</div>'
        for n in found
    )


def sections_html(sections: Sequence[Section]) -> str:
    """The sections' markup: headings, notices and one empty div per view for the script to fill."""
    out = []
    for s in sections:
        views = "".join(
            f'<div class="view" id="{v.id}" data-title="{html.escape(v.name)}"></div>' for v in s.views
        )
        out.append(
            f'<section class="experiment" id="{s.id}"><h2>{html.escape(s.title)}</h2>'
            f'<p class="meta">{html.escape(s.meta)}</p>'
            f'<div class="notices" id="{s.id}-notices">{_notices_html(s.notices)}</div>{views}</section>'
        )
    return "".join(out)


def figures_payload(sections: Sequence[Section], *, version: str = "", live: bool = False) -> str:
    """The JSON the page's script reads: figures, and for live pages the markup to swap in."""
    payload: dict[str, Any] = {
        "version": version,
        "live": live,
        "poll_ms": POLL_MS,
        "figures": [
            {"id": v.id, "group": s.id, "figure": json.loads(v.figure.to_json())} for s in sections for v in s.views
        ],
    }
    if live:
        payload["html"] = sections_html(sections)
        payload["notices"] = {f"{s.id}-notices": _notices_html(s.notices) for s in sections}
    return json.dumps(payload, allow_nan=False)


def render_page(sections: Sequence[Section], *, version: str = "", live: bool = False) -> str:
    """The whole page as one string (plotly.js inlined, no external references)."""
    payload = figures_payload(sections, version=version, live=live).replace("<", "\\u003c")  # safe inside <script>
    titles = ", ".join(s.title for s in sections if s.id != "compare")
    live_status = '<span id="live-status">live: waiting for new trials</span>' if live else ""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>TACFN dashboard: {html.escape(titles)}</title>"
        f"<style>{STYLE}</style><script>window.PlotlyConfig = {{MathJaxConfig: 'local'}};</script>"
        f"<script>{plotly.offline.get_plotlyjs()}</script></head><body>"
        f"<header><h1>TACFN dashboard</h1>{live_status}<span id='selection-status'></span></header>"
        "<noscript><p class='notice notice-error'>"
        "This dashboard draws its figures with JavaScript; enable it to see them.</p></noscript>"
        f"<main id='content'>{sections_html(sections)}</main>"
        f"<script type='application/json' id='dashboard-data'>{payload}</script>"
        f"<script>{SCRIPT}</script></body></html>"
    )


def default_output(exp_dirs: Sequence[Path | str]) -> Path:
    """``EXP_DIR/dashboard.html`` for one experiment, ``comparison.html`` beside the first for several;
    in the current folder when the first is a URI (the page is a local file)."""
    name = "dashboard.html" if len(exp_dirs) == 1 else "comparison.html"
    first = exp_dirs[0]
    if isinstance(first, str):
        return Path(name)
    return first / name if len(exp_dirs) == 1 else first.parent / name


def write_dashboard(exp_dirs: Sequence[str | Path], out: str | Path | None = None) -> Path:
    """Write one self-contained, offline HTML file with every view of the experiments; returns its path.

    Several folders add a comparison section. Raises ConfigError when ``out`` is not an
    ``.html`` file that is new or a page tacfn wrote (see :func:`check_page_output`), and
    DataError when a folder is not an experiment (no ``experiment.json``) or the file cannot
    be written; anything wrong inside an experiment is reported on the page instead.
    """
    dirs = [Location(d).root for d in exp_dirs]
    if not dirs:
        raise ValueError("`exp_dirs` must name at least one experiment folder, but got none")
    out = Path(out) if out else default_output(dirs)
    check_page_output(out)
    return write_page(out, render_page(build_sections(dirs)))
