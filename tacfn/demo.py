"""``tacfn demo``: the main job on embedded defaults, from nothing to a dashboard.

Synthesises the RAVDESS-format dataset and prepares it, runs the ``quickstart`` search
(Ray Tune + Optuna + ASHA on a local Ray runtime) and a small ablation (TACFN against its
paper ablation and each single modality, on paired seeds), and writes one offline HTML
dashboard of both. Everything lands under one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import parse_run_config
from .outputs import check_output_folder
from .tasks import load_task

DEMO_ABLATION: dict[str, Any] = {
    "name": "demo_ablation",
    "base": {"model": {"preset": "lite"}, "train": {"epochs": 6, "batch_size": 16, "lr": 0.002}},
    "baseline": "tacfn",
    "variants": {
        "tacfn": {},
        "no_cross_modal": {"model.fusion.name": "concat"},
        "no_residual": {"model.fusion.residual": False},
        "audio_only": {"model.modalities": ["audio"], "model.fusion.name": "concat"},
        "video_only": {"model.modalities": ["video"], "model.fusion.name": "concat"},
    },
    "seeds": [0, 1, 2],
    "folds": [0],
    "concurrency": 2,
}


def _with_cache(base: dict[str, Any], cache: Path) -> dict[str, Any]:
    return {**base, "data": {**base.get("data", {}), "cache_dir": str(cache)}}


def run_demo(out: Path, *, trials: int | None = None) -> Path:
    """Run the demo into ``out``; returns the dashboard's path."""
    from dashboards import write_dashboard

    from .search import find_space, load_space, parse_plan, run_ablation, run_search

    out = Path(out).resolve()
    check_output_folder(out, "--out")
    cache = out / "cache"
    space = load_space(find_space("quickstart"))
    space = space.model_copy(update={"base": _with_cache(space.base, cache)})
    print(f"[1/4] synthetic RAVDESS dataset -> {cache}", flush=True)
    task = load_task(parse_run_config(space.base, "quickstart base"), progress=True)
    print(f"      {len(task.train)} train / {len(task.val)} validation / {len(task.test)} test clips ({task.description})")

    print(f"[2/4] search: {space.name} ({trials or space.search.trials} trials, Optuna TPE + ASHA)", flush=True)
    summary = run_search(space, out / "search", trials=trials)
    if summary.best_trial:
        print(f"      best: validation {summary.val_score:.3f}, test {summary.test_score:.3f} (chance 0.125)")

    plan = parse_plan({**DEMO_ABLATION, "base": _with_cache(DEMO_ABLATION["base"], cache)}, "demo ablation")
    n = len(plan.variants) * len(plan.seeds) * len(plan.folds)
    print(f"[3/4] ablation: {len(plan.variants)} variants x {len(plan.seeds)} seeds ({n} runs)", flush=True)
    table = run_ablation(plan, out / "ablation")
    for row in table.iter_rows(named=True):
        print(f"      {row['variant']:<16} test {row['mean']:.3f} (n={row['n']}), vs {plan.baseline}: {row['paired_diff']:+.3f}")

    print("[4/4] dashboard", flush=True)
    dashboard = write_dashboard([out / "search", out / "ablation"], out / "dashboard.html")
    print(f"open {dashboard}")
    return dashboard
