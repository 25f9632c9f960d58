"""``tacfn demo``: the main job on embedded defaults, from nothing to a dashboard.

Synthesises two RAVDESS-format datasets and prepares them: the ground truth, where one
emotion bit is planted only in the audio, one only in the video and one only in their
combination, and a planted null without the cross-modal bit. Then it runs the
``quickstart`` search (Ray Tune + Optuna on a local Ray runtime, each configuration trained
on three seeds and raced), the shipped
``ablation_ground_truth`` plan (TACFN, the paper's pooling and each single modality against
concat, on paired seeds and folds), and the same TACFN-vs-concat comparison on the planted
null, and writes one offline HTML dashboard of all three. The first ablation must find TACFN
better than concat and the second no difference: the demo tells the truth it planted.
Everything lands under one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import parse_run_config
from .outputs import check_output_folder
from .tasks import load_task

GROUND_TRUTH_PLAN = "ablation_ground_truth"
NULL_EFFECTS = ["audio", "video"]  # no cross-modal bit: TACFN can read no more than concat
NULL_CLIPS_PER_ACTOR = 16  # the planted null only has to show no difference: a smaller tree will do
# Every fold once: 6 pairs on 6 different test folds. Pairs that share a test fold are not
# independent (a variant can be ahead on those test clips by chance, on every seed), which the
# paired test does not model; on a null that would read as an effect (README, Ground truth).
NULL_SEEDS, NULL_FOLDS = [0], [0, 1, 2, 3, 4, 5]
INDENT = " " * 6  # under a step's "[n/5] "


def _with_data(base: dict[str, Any], cache: Path, **synthetic: Any) -> dict[str, Any]:
    data = base.get("data", {})
    return {**base, "data": {**data, "cache_dir": str(cache), "synthetic": {**data.get("synthetic", {}), **synthetic}}}


def run_demo(out: Path, *, trials: int | None = None) -> Path:
    """Run the demo into ``out``; returns the dashboard's path."""
    from dashboards import format_ablation_table, load_experiment, write_dashboard

    from .search import find_space, load_plan, load_space, parse_plan, run_ablation, run_search

    out = Path(out).resolve()
    check_output_folder(out, "--out")
    cache = out / "cache"
    plan = load_plan(GROUND_TRUTH_PLAN)
    truth_base = _with_data(plan.base, cache)
    null_base = _with_data(plan.base, cache, effects=NULL_EFFECTS, clips_per_actor=NULL_CLIPS_PER_ACTOR)
    print(f"[1/5] synthetic RAVDESS datasets -> {cache}", flush=True)
    for base in (truth_base, null_base):
        task = load_task(parse_run_config(base, "demo data"), progress=True)
        print(f"      {task.description}: {len(task.train)} train / {len(task.val)} validation / {len(task.test)} test clips")

    space = load_space(find_space("quickstart"))
    space = space.model_copy(update={"base": _with_data(space.base, cache)})
    search = space.search
    how = f"Optuna {search.sampler}" + (" + ASHA" if search.scheduler == "asha" else "")
    if search.replicates > 1:
        how += f", each on {search.replicates} seeds and raced"
    print(f"[2/5] search: {space.name} ({trials or search.trials} configurations, {how})", flush=True)
    summary = run_search(space, out / "search", trials=trials)
    if summary.test_interval is not None:
        low, high = summary.test_interval
        print(f"      best: validation {summary.aggregate} {summary.val_score:.3f}, test mean {summary.test_score:.3f} "
              f"[{low:.3f}, {high:.3f}] over {summary.replicates} seeds (chance 0.125)")
    elif summary.best_trial:
        print(f"      best: validation {summary.val_score:.3f}, test {summary.test_score:.3f} (chance 0.125)")

    truth = plan.model_copy(update={"base": truth_base})
    runs = len(truth.variants) * len(truth.seeds) * len(truth.folds)
    print(f"[3/5] ablation on the ground truth: {len(truth.variants)} variants x {len(truth.seeds)} seeds x "
          f"{len(truth.folds)} folds ({runs} runs)", flush=True)
    ablation = run_ablation(truth, out / "ablation")
    print(format_ablation_table(load_experiment(ablation), indent=INDENT))

    null = parse_plan(
        {**plan.model_dump(mode="json"), "name": "planted_null", "base": null_base,
         "variants": {v: plan.variants[v] for v in (plan.baseline, "tacfn")}, "seeds": NULL_SEEDS, "folds": NULL_FOLDS},
        "demo planted null",
    )
    print(f"[4/5] ablation on the planted null ({', '.join(NULL_EFFECTS)} only): tacfn vs {plan.baseline}", flush=True)
    planted_null = run_ablation(null, out / "planted-null")
    print(format_ablation_table(load_experiment(planted_null), indent=INDENT))

    print("[5/5] dashboard", flush=True)
    dashboard = write_dashboard([out / "search", ablation, planted_null], out / "dashboard.html")
    print(f"open {dashboard}")
    return dashboard
