"""The dashboard page: every view of one or more experiments in one self-contained HTML file.

plotly.js is inlined once and the figures travel as one JSON block that the page's script
(:mod:`dashboards._script`) draws, so the file opens offline and fetches nothing. What
cannot be drawn is said on the page: unreadable files and experiment progress as notices at
the top of the experiment's section, and a view that has nothing to draw, or fails, as a
note in its place saying why (:class:`~dashboards._common.Unavailable`; :func:`gaps` lists
the notes for the command line).
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

from ._ablation import _get_ablation_forest_plot, _get_ablation_info, _get_ablation_table_plot
from ._ablation_blocks import _get_blocks_caveat, _get_blocks_info, _get_blocks_plot
from ._ablation_scores import _get_ablation_scores_info, _get_ablation_scores_plot
from ._best import (
    _get_confusion_info,
    _get_confusion_plot,
    _get_missing_info,
    _get_missing_plot,
    _get_per_class_info,
    _get_per_class_plot,
)
from ._common import Unavailable, check_page_output, notice_html, write_page
from ._compare import display_names, plot_compare
from ._config_leaderboard import _get_config_leaderboard_info, _get_config_leaderboard_plot
from ._configurations import is_seed_aware
from ._curves import _get_curves_info, _get_curves_plot
from ._history import _get_history_plot, _get_history_view
from ._importance import _get_importance_info, _get_importance_plot
from ._leaderboard import _get_leaderboard_info, _get_leaderboard_plot
from ._loading import Experiment, Notice, load_experiment, notices, planned_trials
from ._parallel import _get_parallel_info, _get_parallel_plot
from ._pareto import _get_pareto_info, _get_pareto_plot
from ._replicates import _get_replicates_info, _get_replicates_plot
from ._script import SCRIPT, STYLE
from ._slices import _get_slice_info, _get_slice_plot
from ._timeline import _get_timeline_info, _get_timeline_plot

PAGE_TOP_K = 25
POLL_MS = 2000


class _ViewSpec(NamedTuple):
    """One view: its info step returns the info its draw step draws, an Unavailable saying why
    there is nothing to draw, or None when the view does not apply to the experiment."""

    name: str  # the div id is "<section id>-<name>"
    title: str  # what the page calls it in a note: "<title>: <why it is not drawn>"
    info: Callable[[Experiment], Any]
    draw: Callable[[Any], go.Figure]
    crossfilter: str | None = None  # "points", "parcoords" or "table": takes part in cross-filtering
    caveat: Callable[[Any], str | None] | None = None  # what a drawn figure leaves out: a note above it


def _leaderboard_info(exp: Experiment) -> Any:
    """The trials' leaderboard; none without trials (the notices say why) or in a seed-aware
    search, whose leaderboard is by configuration."""
    return _get_leaderboard_info(exp, PAGE_TOP_K) if exp.trials.height and not is_seed_aware(exp) else None


def _config_leaderboard_info(exp: Experiment) -> Any:
    return _get_config_leaderboard_info(exp, PAGE_TOP_K) if exp.trials.height else None


def _replicates_info(exp: Experiment) -> Any:
    return _get_replicates_info(exp, PAGE_TOP_K)


_LEADERBOARD = _ViewSpec("leaderboard", "Leaderboard", _leaderboard_info, _get_leaderboard_plot, "table")
_HISTORY = _ViewSpec("history", "Optimisation history", _get_history_view, _get_history_plot, "points")
_CURVES = _ViewSpec("curves", "Learning curves", _get_curves_info, _get_curves_plot)
_CONFUSION = _ViewSpec("confusion", "Confusion matrix", _get_confusion_info, _get_confusion_plot)
_PER_CLASS = _ViewSpec("per-class", "Per-class scores", _get_per_class_info, _get_per_class_plot)
_MISSING = _ViewSpec("missing-modality", "Score with a modality missing", _get_missing_info, _get_missing_plot)
_TIMELINE = _ViewSpec("timeline", "Trial timeline", _get_timeline_info, _get_timeline_plot, "points")

VIEWS: dict[str | None, list[_ViewSpec]] = {
    "search": [
        _LEADERBOARD,
        _ViewSpec(
            "configurations", "Leaderboard by configuration", _config_leaderboard_info, _get_config_leaderboard_plot, "table"
        ),
        _ViewSpec("replicates", "Replicates", _replicates_info, _get_replicates_plot, "points"),
        _HISTORY,
        _ViewSpec("parallel", "Parallel coordinates", _get_parallel_info, _get_parallel_plot, "parcoords"),
        _ViewSpec("slices", "Slice plots", _get_slice_info, _get_slice_plot, "points"),
        _ViewSpec("importance", "Parameter importance", _get_importance_info, _get_importance_plot),
        _ViewSpec("pareto", "Pareto front", _get_pareto_info, _get_pareto_plot, "points"),
        _CURVES,
        _CONFUSION,
        _PER_CLASS,
        _MISSING,
        _TIMELINE,
    ],
    "ablation": [
        _ViewSpec("ablation-table", "Ablation table", _get_ablation_info, _get_ablation_table_plot),
        _ViewSpec("ablation-forest", "Ablation forest plot", _get_ablation_info, _get_ablation_forest_plot),
        _ViewSpec("ablation-scores", "Ablation scores", _get_ablation_scores_info, _get_ablation_scores_plot),
        _ViewSpec(
            "ablation-blocks", "Fusion blocks side by side", _get_blocks_info, _get_blocks_plot, caveat=_get_blocks_caveat
        ),
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
    """A figure, or (``figure`` None) the note saying why the view has nothing to draw; a
    figure with a note is drawn below it (the note says what the figure leaves out)."""

    id: str
    name: str
    figure: go.Figure | None
    note: Notice | None = None


class Section(NamedTuple):
    id: str
    title: str
    meta: str
    notices: list[Notice]
    views: list[View]


def experiment_section(exp: Experiment, section_id: str) -> Section:
    """Every view that applies to the experiment, or in its place a note saying why it has
    nothing to draw (none while there are no trials: the notices say so once) or why it failed."""
    found = notices(exp)
    views = []
    for spec in VIEWS[exp.kind]:
        view_id = f"{section_id}-{spec.name}"
        try:
            info = spec.info(exp)
            figure = None if info is None or isinstance(info, Unavailable) else spec.draw(info)
        except Exception as exc:  # one broken view must not take the page down: say what broke
            note = Notice("error", f"{spec.title}: could not be drawn ({type(exc).__name__}: {exc})")
            views.append(View(view_id, spec.name, None, note))
            continue
        if isinstance(info, Unavailable) and exp.trials.height:
            views.append(View(view_id, spec.name, None, Notice(info.level, f"{spec.title}: {info.reason}")))
        elif figure is not None:
            if spec.crossfilter:
                figure.update_layout(meta={**(figure.layout.meta or {}), "crossfilter": spec.crossfilter})
            caveat = spec.caveat(info) if spec.caveat else None
            views.append(View(view_id, spec.name, figure, Notice("info", f"{spec.title}: {caveat}") if caveat else None))
    planned = planned_trials(exp)
    of_planned = f" of {planned} planned" if planned else ""
    if is_seed_aware(exp):
        counted = f"{exp.trials['config_hash'].n_unique()} configurations{of_planned}, {exp.trials.height} replicate runs"
    else:
        counted = f"{exp.trials.height} trials{of_planned}"
    parts = [str(exp.root), counted]
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


def gaps(sections: Sequence[Section]) -> list[str]:
    """One line per view that has nothing to draw, and why (prefixed with the experiment when
    there are several), or a section's notices when it has no view at all (no trials yet)."""
    experiments = [s for s in sections if s.id != "compare"]
    lines = []
    for s in experiments:
        prefix = f"{s.title}: " if len(experiments) > 1 else ""
        notes = [v.note.text for v in s.views if v.note] if s.views else [n.text for n in s.notices]
        lines += [prefix + note for note in notes]
    return lines


def _notices_html(found: list[Notice]) -> str:
    return "".join(notice_html(n.text, n.level) for n in found)


def sections_html(sections: Sequence[Section]) -> str:
    """The sections' markup: headings, notices and one empty div per view for the script to fill."""
    out = []
    for s in sections:
        views = "".join(
            (f'<div class="view-note" id="{v.id}-note">{_notices_html([v.note])}</div>' if v.note else "")
            + (f'<div class="view" id="{v.id}" data-title="{html.escape(v.name)}"></div>' if v.figure is not None else "")
            for v in s.views
        )
        out.append(
            f'<section class="experiment" id="{s.id}"><h2>{html.escape(s.title)}</h2>'
            f'<p class="meta">{html.escape(s.meta)}</p>'
            f'<div class="notices" id="{s.id}-notices">{_notices_html(s.notices)}</div>{views}</section>'
        )
    return "".join(out)


def _slots(view: View) -> list[str]:
    """The ids a view fills on the page: its note's, then its figure's."""
    return ([f"{view.id}-note"] if view.note else []) + ([view.id] if view.figure is not None else [])


def figures_payload(sections: Sequence[Section], *, version: str = "", live: bool = False) -> str:
    """The JSON the page's script reads: figures, and for live pages the markup to swap in."""
    payload: dict[str, Any] = {
        "version": version,
        "live": live,
        "poll_ms": POLL_MS,
        "figures": [
            {"id": v.id, "group": s.id, "figure": json.loads(v.figure.to_json())}
            for s in sections
            for v in s.views
            if v.figure is not None
        ],
        "slots": [slot for s in sections for v in s.views for slot in _slots(v)],
    }
    if live:
        payload["html"] = sections_html(sections)
        payload["notices"] = {f"{s.id}-notices": _notices_html(s.notices) for s in sections}
        payload["notices"] |= {f"{v.id}-note": _notices_html([v.note]) for s in sections for v in s.views if v.note}
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


def write_dashboard(
    exp_dirs: Sequence[str | Path], out: str | Path | None = None, *, on_gap: Callable[[str], Any] | None = None
) -> Path:
    """Write one self-contained, offline HTML file with every view of the experiments; returns its path.

    Several folders add a comparison section. Raises ConfigError when ``out`` is not an
    ``.html`` file that is new or a page tacfn wrote (see :func:`check_page_output`), and
    DataError when a folder is not an experiment (no ``experiment.json``) or the file cannot
    be written; anything wrong inside an experiment is reported on the page instead.
    ``on_gap``, if given, is called with each line of :func:`gaps`: what the page could not show.
    """
    dirs = [Location(d).root for d in exp_dirs]
    if not dirs:
        raise ValueError("`exp_dirs` must name at least one experiment folder, but got none")
    out = Path(out) if out else default_output(dirs)
    check_page_output(out)
    sections = build_sections(dirs)
    page = write_page(out, render_page(sections))
    if on_gap:
        for line in gaps(sections):
            on_gap(line)
    return page
