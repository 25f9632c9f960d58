"""One training run's dashboard: learning curves, confusion matrix, per-class accuracy,
and the test score with each modality missing, as one offline HTML file.

Reads only the run's ``result.json``. Each view is two steps, as in Optuna's plots: an
``_info`` function does the data work with Polars, a ``_plot`` function only draws. An info
step that finds nothing to draw returns an :class:`~dashboards._common.Unavailable` saying
why; the page puts that note where the figure would be, as the experiment dashboard does.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from tacfn.errors import TacfnError

from ._common import Unavailable, check_page_output, notice_html, write_page
from ._script import NOTICE_STYLE

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
_RESULT_KEYS = ("status", "history", "num_parameters")  # what every report reads


class RunReportError(TacfnError):
    """The run folder has no readable result."""


class CurvesInfo(NamedTuple):
    history: pl.DataFrame
    best_epoch: int | None


class ConfusionInfo(NamedTuple):
    matrix: list[list[int]]
    class_names: list[str]
    per_class_accuracy: list[float]


def load_result(run_dir: Path) -> dict[str, Any]:
    """``run_dir/result.json``; RunReportError when it is missing, corrupt or not a run's result."""
    path = Path(run_dir) / "result.json"
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunReportError(f"{path} not found: is {run_dir} a training run folder?") from None
    except (OSError, json.JSONDecodeError) as err:
        raise RunReportError(f"{path} is unreadable or corrupt ({err})") from None
    missing = [key for key in _RESULT_KEYS if key not in result] if isinstance(result, dict) else list(_RESULT_KEYS)
    if missing:
        raise RunReportError(f"{path} is not a training result: it lacks {missing} (written by `tacfn train --out`)")
    return result


def _status(result: dict[str, Any]) -> str:
    """``"status diverged: <error>"``: how the run ended, for a note."""
    error = result.get("error")
    return f"status {result['status']}" + (f": {error}" if error else "")


def _untested(result: dict[str, Any]) -> Unavailable | None:
    """Why the run has no test scores: no epoch was chosen on validation, or none was scored."""
    if result.get("test"):
        return None
    if result.get("best_epoch") is None:
        return Unavailable(f"no epoch was chosen on validation, so nothing was scored on test ({_status(result)})")
    return Unavailable("result.json has no test scores")


def _curves_info(result: dict[str, Any]) -> CurvesInfo | Unavailable:
    history = pl.DataFrame(result.get("history") or [], schema_overrides={"epoch": pl.Int64})
    if not history.height:
        return Unavailable(f"no epoch finished ({_status(result)})")
    return CurvesInfo(history, result.get("best_epoch"))


def _curves_plot(info: CurvesInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "score (accuracy)"))
    if info.history.height:
        epochs = info.history["epoch"].to_list()
        for col, name, c in (("train_loss", "train loss", 1), ("val_loss", "validation loss", 1),
                             ("train_score", "train accuracy", 2), ("val_score", "validation accuracy", 2)):
            fig.add_trace(go.Scatter(x=epochs, y=info.history[col].to_list(), name=name, mode="lines+markers"), row=1, col=c)
        if info.best_epoch is not None:
            fig.add_vline(x=info.best_epoch, line_dash="dot", annotation_text="best (validation)", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Learning curves", height=380)
    return fig


def _confusion_info(result: dict[str, Any]) -> ConfusionInfo | Unavailable:
    gap = _untested(result)
    if gap:
        return gap
    test = result["test"]
    if "confusion" not in test:
        tasks = [key.removesuffix("_accuracy") for key in test if key.endswith("_accuracy") and key != "per_class_accuracy"]
        per_task = f" per task ({', '.join(tasks)})" if tasks else ""
        return Unavailable(f"the test split is scored{per_task} without a confusion matrix in result.json")
    n = len(test["confusion"])
    names = list(RAVDESS_EMOTIONS) if n == len(RAVDESS_EMOTIONS) else [str(i) for i in range(n)]
    return ConfusionInfo(test["confusion"], names, test["per_class_accuracy"])


def _confusion_plot(info: ConfusionInfo) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("confusion (test)", "per-class accuracy (test)"), column_widths=[0.55, 0.45])
    fig.add_trace(go.Heatmap(z=info.matrix, x=info.class_names, y=info.class_names, colorscale="Blues", showscale=False,
                             text=info.matrix, texttemplate="%{text}"), row=1, col=1)
    fig.update_yaxes(autorange="reversed", title_text="true", row=1, col=1)
    fig.update_xaxes(title_text="predicted", row=1, col=1)
    fig.add_trace(go.Bar(x=info.class_names, y=info.per_class_accuracy, showlegend=False), row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(title="Best epoch on the test split", height=420)
    return fig


class MissingInfo(NamedTuple):
    names: list[str]
    scores: list[float]


def _missing_info(result: dict[str, Any]) -> MissingInfo | Unavailable:
    gap = _untested(result)
    if gap:
        return gap
    missing = result.get("test_missing_modality") or {}
    if not missing:
        return Unavailable("the model reads one modality, so there is none to leave out")
    return MissingInfo(["all modalities", *[f"without {m}" for m in missing]], [result["test"]["score"], *missing.values()])


def _missing_plot(info: MissingInfo) -> go.Figure:
    fig = go.Figure(go.Bar(x=info.names, y=info.scores, text=[f"{v:.3f}" for v in info.scores], textposition="outside"))
    fig.update_layout(title="Test score with a modality missing", yaxis_range=[0, 1.05], height=360)
    return fig


# Each view: its title in a note ("<title>: <why it is not drawn>"), its info step, its draw step.
_VIEWS: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], go.Figure]]] = [
    ("Learning curves", _curves_info, _curves_plot),
    ("Confusion matrix and per-class accuracy", _confusion_info, _confusion_plot),
    ("Score with a modality missing", _missing_info, _missing_plot),
]


def _score(split: dict[str, Any] | None) -> str:
    return f"{split['score']:.3f}" if split and "score" in split else "not scored"


def write_run_report(run_dir: Path, out: Path | None = None, *, on_gap: Callable[[str], Any] | None = None) -> Path:
    """Write the run's dashboard HTML (plotly.js inlined: works offline); returns its path.
    ``out`` (default: ``run_dir/dashboard.html``) must be new or a page tacfn wrote. A view
    with nothing to draw gets a note in its place saying why; ``on_gap``, if given, is called
    with each such note's line (``"<view>: <why>"``)."""
    out = Path(out) if out else Path(run_dir) / "dashboard.html"
    check_page_output(out)
    result = load_result(run_dir)
    parts, gaps, plotly_js = [], [], True
    for i, (title, info_step, draw) in enumerate(_VIEWS):
        info = info_step(result)
        if isinstance(info, Unavailable):
            gaps.append(f"{title}: {info.reason}")
            parts.append(f'<div class="view-note" id="view-{i}-note">{notice_html(gaps[-1], info.level)}</div>')
            continue
        parts.append(draw(info).to_html(full_html=False, include_plotlyjs=plotly_js, div_id=f"view-{i}"))
        plotly_js = False  # inlined once, with the first figure
    summary = (
        f"status {result['status']}, best epoch {result.get('best_epoch')}, "
        f"validation {_score(result.get('val'))}, test {_score(result.get('test'))}, "
        f"{result['num_parameters']:,} parameters"
    )
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>TACFN run</title>"
        f"<style>{NOTICE_STYLE}</style></head>"
        f"<body style='font-family:sans-serif'><h1>TACFN run</h1><p>{html.escape(summary)}</p>"
        + "".join(parts)
        + "</body></html>"
    )
    written = write_page(out, page)
    if on_gap:
        for line in gaps:
            on_gap(line)
    return written
