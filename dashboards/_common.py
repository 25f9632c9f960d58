"""Helpers every view shares: visible sampling of large tables, titles, colours, the reason a
view has nothing to draw; and the checked, atomic write of a page file that the dashboard
and the run report share."""

from __future__ import annotations

import html
from pathlib import Path
from typing import NamedTuple

import polars as pl

from tacfn.errors import ConfigError
from tacfn.store import Location

_PAGE_MARK = b"<title>TACFN "  # in the head of every page tacfn writes: dashboards and run reports
_PAGE_HEAD_BYTES = 1024
MAX_POINTS = 1000  # points or lines one view draws before it samples
STATUS_COLORS = {
    "completed": "#1f77b4",
    "pruned": "#9e9e9e",
    "running": "#2ca02c",
    "failed": "#d62728",
    "diverged": "#ff7f0e",
}


class Unavailable(NamedTuple):
    """Why a view that applies to an experiment has nothing to draw, returned by its info step
    in place of its info (None there means the view does not apply: a Pareto front of a
    single-objective search). The page shows it where the figure would be, and ``tacfn
    dashboard`` prints it; ``reason`` completes "<view title>: ..."."""

    reason: str
    level: str = "info"  # "warning" when a results file is missing or unreadable


def notice_html(text: str, level: str = "info") -> str:
    """One notice's markup, styled by :data:`dashboards._script.NOTICE_STYLE`: errors and
    warnings are announced as alerts, the rest as status."""
    role = "alert" if level in ("error", "warning") else "status"
    return f'<div class="notice notice-{level}" role="{role}">{html.escape(text)}</div>'


def sample_best(frame: pl.DataFrame, limit: int, by: str, seed: int = 0) -> pl.DataFrame:
    """At most ``limit`` rows: the best tenth by ``by`` (descending) and a seeded sample of the rest.

    Keeping the best rows means sampling never hides what the reader looks for first.
    """
    if frame.height <= limit:
        return frame
    n_best = limit // 10
    ordered = frame.sort(by, descending=True, nulls_last=True)
    rest = ordered.slice(n_best).sample(limit - n_best, seed=seed)
    return pl.concat([ordered.head(n_best), rest])


def showing(shown: int, total: int, what: str = "trials") -> str:
    """``"40 trials"``, or ``"showing 1000 of 2000 trials"`` when a view sampled."""
    return f"{total} {what}" if shown >= total else f"showing {shown} of {total} {what}"


def trial_numbers(trials: pl.DataFrame) -> pl.DataFrame:
    """``trials`` in start order (then id) with a 0-based ``number`` column, as Optuna numbers trials."""
    order = ["started_at", "trial_id"] if "started_at" in trials.columns else ["trial_id"]
    return trials.sort(order, nulls_last=True).with_row_index("number")


def check_page_output(out: Path) -> None:
    """Refuse ``out`` unless it names an ``.html`` file that is new or a page tacfn wrote: a
    dashboard replaces an earlier dashboard, never a results table, a config or a checkpoint."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"{out}: a dashboard is an HTML page; name a file ending in .html")
    if not out.exists():
        return
    try:
        with out.open("rb") as f:
            ours = out.is_file() and _PAGE_MARK in f.read(_PAGE_HEAD_BYTES)
    except OSError:
        ours = False
    if not ours:
        raise ConfigError(f"{out} exists and is not a page tacfn wrote, so it is left as it is; name another .html file")


def write_page(out: Path, page: str) -> Path:
    """Write the page ``out`` atomically (a browser reloading it never sees half); returns ``out``."""
    Location(out.parent).write(out.name, lambda f: f.write(page.encode("utf-8")))
    return out
