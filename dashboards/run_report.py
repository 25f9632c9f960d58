"""One training run's dashboard: learning curves, confusion matrix, per-class accuracy,
and the test score with each modality missing, as one offline HTML file.

Reads only the run's ``result.json``. Each view is two steps, as in Optuna's plots: an
``_info`` function does the data work with Polars, a ``_plot`` function only draws.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from tacfn.errors import TacfnError

from ._common import check_page_output, write_page

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


def _curves_info(result: dict[str, Any]) -> CurvesInfo:
    history = pl.DataFrame(result.get("history") or [], schema_overrides={"epoch": pl.Int64})
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


def _confusion_info(result: dict[str, Any]) -> ConfusionInfo | None:
    test = result.get("test") or {}
    if "confusion" not in test:
        return None
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


def _missing_plot(result: dict[str, Any]) -> go.Figure | None:
    missing = result.get("test_missing_modality") or {}
    if not missing or not result.get("test"):
        return None
    names = ["all modalities", *[f"without {m}" for m in missing]]
    values = [result["test"]["score"], *missing.values()]
    fig = go.Figure(go.Bar(x=names, y=values, text=[f"{v:.3f}" for v in values], textposition="outside"))
    fig.update_layout(title="Test score with a modality missing", yaxis_range=[0, 1.05], height=360)
    return fig


def write_run_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the run's dashboard HTML (plotly.js inlined: works offline); returns its path.
    ``out`` (default: ``run_dir/dashboard.html``) must be new or a page tacfn wrote."""
    out = Path(out) if out else Path(run_dir) / "dashboard.html"
    check_page_output(out)
    result = load_result(run_dir)
    figures = [_curves_plot(_curves_info(result))]
    confusion = _confusion_info(result)
    if confusion:
        figures.append(_confusion_plot(confusion))
    missing = _missing_plot(result)
    if missing:
        figures.append(missing)
    summary = (
        f"status {result['status']}, best epoch {result.get('best_epoch')}, "
        f"validation {result.get('val', {}).get('score', float('nan')):.3f}, test {result.get('test', {}).get('score', float('nan')):.3f}, "
        f"{result['num_parameters']:,} parameters"
    )
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=f"view-{i}") for i, fig in enumerate(figures)]
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>TACFN run</title></head>"
        f"<body style='font-family:sans-serif'><h1>TACFN run</h1><p>{html.escape(summary)}</p>"
        + "".join(parts)
        + "</body></html>"
    )
    return write_page(out, page)
