"""Helpers every view shares: visible sampling of large tables, titles, colours."""

from __future__ import annotations

import polars as pl

MAX_POINTS = 1000  # points or lines one view draws before it samples
STATUS_COLORS = {
    "completed": "#1f77b4",
    "pruned": "#9e9e9e",
    "running": "#2ca02c",
    "failed": "#d62728",
    "diverged": "#ff7f0e",
}


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
