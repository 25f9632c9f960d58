"""The report's figures as static SVG and PNG: the dashboard's own figures, exported by
Plotly's image engine, Kaleido (v1), in a headless Chrome or Chromium of this machine.

Kaleido finds the browser on ``PATH`` (``chromium``, ``google-chrome``, ...) or at
``$BROWSER_PATH``; it never downloads one by itself, and nor does this module. One browser
serves every figure of a report (starting it is most of the cost). The page Kaleido draws in
loads plotly.js from the installed plotly package; MathJax, which it would fetch from a CDN
and no figure here uses, is turned off, so exporting reaches for nothing outside the machine.

Kaleido is an optional dependency (the ``report`` extra): without it, or without a browser
it can start, :func:`render_figures` returns an :class:`~dashboards._common.Unavailable`
saying why and what installs it, and the report keeps its tables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple, TypeVar

import plotly.graph_objects as go

from ._ablation import _get_ablation_forest_plot, _get_ablation_info
from ._best import _get_confusion_info, _get_confusion_plot
from ._common import Unavailable
from ._curves import _get_curves_info, _get_curves_plot
from ._loading import Experiment

FORMATS = ("svg", "png")
PNG_SCALE = 2  # pixels per layout pixel: print resolution
RENDER_TIMEOUT_S = 120  # per figure, on a loaded machine
KALEIDO_FIX = "pip install 'kaleido>=1.0,<2' (tacfn's report extra) adds it"
BROWSER_FIX = "apt-get install chromium, or set BROWSER_PATH to a Chrome or Chromium"

T = TypeVar("T")


class FigureSpec(NamedTuple):
    """One figure of the report: its file name part, what a note calls it, its info and draw
    steps (the dashboard's), and its width in layout pixels (the height is the figure's)."""

    name: str
    title: str
    info: Callable[[Experiment], Any]
    draw: Callable[[Any], go.Figure]
    width: Callable[[Any], int]


_FOREST = FigureSpec("forest", "forest plot", _get_ablation_info, _get_ablation_forest_plot, lambda _: 800)
_CURVES = FigureSpec("curves", "learning curves", _get_curves_info, _get_curves_plot, lambda _: 1000)
_CONFUSION = FigureSpec(
    "confusion", "confusion matrix", _get_confusion_info, _get_confusion_plot, lambda info: 180 + 420 * len(info.panels)
)
FIGURES: dict[str | None, list[FigureSpec]] = {"ablation": [_FOREST, _CURVES, _CONFUSION], "search": [_CURVES, _CONFUSION]}


class StaticFigure(NamedTuple):
    figure: go.Figure
    width: int
    height: int


def static_figure(spec: FigureSpec, info: Any) -> StaticFigure:
    """The dashboard's figure for ``info``, sized for a page: fixed width, its own height."""
    figure = spec.draw(info)
    return StaticFigure(figure, spec.width(info), int(figure.layout.height or 500))


def render_figures(figures: Sequence[StaticFigure]) -> list[dict[str, bytes]] | Unavailable:
    """Each figure as ``{"svg": ..., "png": ...}`` bytes, rendered in one browser; an
    Unavailable saying why and what fixes it when Kaleido or a browser is missing or the
    browser does not start."""
    try:
        import kaleido
        from kaleido.errors import BrowserClosedError, BrowserFailedError, ChromeNotFoundError
    except ImportError:
        return Unavailable(f"kaleido, Plotly's image export, is not installed; {KALEIDO_FIX}")
    from choreographer.errors import BrowserDepsError, ChannelClosedError

    async def render() -> list[dict[str, bytes]]:
        async with kaleido.Kaleido(mathjax=False, timeout=RENDER_TIMEOUT_S) as k:
            images = []
            for fig in figures:
                spec = fig.figure.to_dict()
                images.append(
                    {
                        fmt: await k.calc_fig(
                            spec, {"format": fmt, "width": fig.width, "height": fig.height, "scale": PNG_SCALE if fmt == "png" else 1}
                        )
                        for fmt in FORMATS
                    }
                )
            return images

    try:
        return _run(render)
    except ChromeNotFoundError:
        return Unavailable(f"kaleido found no Chrome or Chromium (it looks on PATH and at $BROWSER_PATH); {BROWSER_FIX}")
    except (BrowserFailedError, BrowserDepsError, BrowserClosedError, ChannelClosedError) as err:
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return Unavailable(f"kaleido could not start or keep its browser ({why}); {BROWSER_FIX}")


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to the end: here, or on a thread of its own when this thread already
    runs an event loop (a notebook), where ``asyncio.run`` refuses."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
