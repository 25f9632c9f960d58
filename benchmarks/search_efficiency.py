"""Search efficiency: TPE+ASHA against the exhaustive grid of the same space.

On the synthetic task (lite preset, frozen backbone) the space is 3 fusion blocks x 3 learning
rates x 2 batch sizes. The grid runs every point to the full epoch budget; its best validation
score is that of its best point's best epoch (what model selection keeps). TPE+ASHA then
searches the same space with the same budget per trial. The figure: the epochs TPE+ASHA ran,
summed over its trials in the order they ran, until a trial that completed the budget scored
within 1 point (0.01 accuracy) of the grid's best, as a percentage of the grid's epochs.
Goal <= 30%. Only completed trials count: a search chooses among them, never a pruned one.
TPE+ASHA gets up to twice as many trials as the grid has points (10 with --quick); if none
gets there, it says so. It never trains a configuration twice (see PrunableOptunaSearch), so
it ends early once TPE proposes only configurations it has run. The full run validates on 4 actors x 16 clips, where one clip is 1.6 points,
so "within 1 point" means matching the grid's best.

Both go through ``run_search``, so a config trains identically in both (same process kind,
one torch thread per trial). The grid's points go to ``run_search`` as its points to evaluate
and run without a scheduler, concurrency equal to
the cores. TPE+ASHA runs one trial at a time: with several, what TPE has seen when it samples
and which results an ASHA rung holds depend on timing. The sampler is seeded and training is
deterministic on a CPU, so reruns agree.

The synthetic dataset and its features live under $TACFN_HOME (default ~/.cache/tacfn), as
for ``tacfn search``.

    python benchmarks/search_efficiency.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import ray
import torch

from tacfn.search import SearchSpec, compile_space, grid, parse_space, run_search
from tacfn.store import ExperimentStore
from tacfn.tasks import default_cache_dir

BLOCKS = ("tacfn", "concat", "mult")
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
BATCH_SIZES = (16, 32)
GRID_POINTS = len(BLOCKS) * len(LEARNING_RATES) * len(BATCH_SIZES)
WITHIN = 0.01  # one point of accuracy


def efficiency_spec(
    name: str, epochs: int, synthetic: dict[str, int], *, trials: int, concurrency: int, scheduler: str
) -> SearchSpec:
    """The benchmark's space over the synthetic task, searched as ``scheduler`` says."""
    return parse_space(
        {
            "name": name,
            "base": {
                "model": {"preset": "lite", "backbone": "frozen"},
                "data": {"synthetic": synthetic, "cache_dir": str(default_cache_dir())},
                "train": {"epochs": epochs, "seed": 0, "device": "cpu"},
            },
            "space": {
                "model.fusion.name": {"choice": list(BLOCKS)},
                "train.lr": {"choice": list(LEARNING_RATES)},
                "train.batch_size": {"choice": list(BATCH_SIZES)},
            },
            "search": {
                "trials": trials,
                "concurrency": concurrency,
                "scheduler": scheduler,
                "asha": {"grace_period": 1, "reduction_factor": 3},
                "seed": 0,
                "resources": {"cpu": 1, "gpu": 0},
            },
        },
        "search_efficiency",
    )


def trials_in_order(out: Path) -> list[dict[str, Any]]:
    """The search's trials, as store rows, in the order they finished."""
    rows = ExperimentStore(out).trials().to_pylist()
    return sorted(rows, key=lambda row: row["finished_at"])


def run_grid(epochs: int, synthetic: dict[str, int], root: Path) -> tuple[float, dict[str, Any], int]:
    """Every point to the full budget: (best validation score, its params, epochs run)."""
    cores = os.cpu_count() or 1
    spec = efficiency_spec(
        "efficiency-grid", epochs, synthetic, trials=GRID_POINTS, concurrency=cores, scheduler="none"
    )
    points = grid(compile_space(spec))
    out = root / "grid"
    run_search(spec, out, quiet=True, points=points)
    rows = trials_in_order(out)
    keys = list(spec.space)
    ran = sorted(tuple(row[f"config.{key}"] for key in keys) for row in rows)
    if ran != sorted(tuple(point[key] for key in keys) for point in points):
        raise RuntimeError("the grid search did not run exactly the grid's points")
    if any(row["status"] != "completed" for row in rows):
        raise RuntimeError(f"grid trials did not all complete: {[row['status'] for row in rows]}")
    best = max(rows, key=lambda row: row["val_score"])
    return best["val_score"], {key: best[f"config.{key}"] for key in keys}, sum(row["epochs_run"] for row in rows)


def run_tpe_asha(epochs: int, synthetic: dict[str, int], trials: int, root: Path) -> list[dict[str, Any]]:
    """TPE+ASHA over the same space, one trial at a time; its trials in the order they ran."""
    spec = efficiency_spec("efficiency-tpe-asha", epochs, synthetic, trials=trials, concurrency=1, scheduler="asha")
    out = root / "tpe-asha"
    run_search(spec, out, quiet=True)
    return trials_in_order(out)


def epochs_to_reach(rows: list[dict[str, Any]], target: float) -> tuple[int, dict[str, Any]] | None:
    """Epochs run up to the first completed trial scoring at least ``target``, and that trial."""
    used = 0
    for row in rows:
        used += row["epochs_run"] or 0
        if row["status"] == "completed" and row["val_score"] >= target:
            return used, row
    return None


def figure_tpe_asha_vs_grid(epochs: int, synthetic: dict[str, int], trials: int) -> float | None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        grid_best, grid_params, grid_epochs = run_grid(epochs, synthetic, root)
        grid_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = run_tpe_asha(epochs, synthetic, trials, root)
        search_s = time.perf_counter() - t0
    total = sum(row["epochs_run"] or 0 for row in rows)
    statuses = {s: sum(row["status"] == s for row in rows) for s in ("completed", "pruned", "failed", "diverged")}
    completed = [row["val_score"] for row in rows if row["status"] == "completed"]
    print(f"    grid: {GRID_POINTS} points x {epochs} epochs = {grid_epochs} epochs in {grid_s:.0f} s; "
          f"best val {grid_best:.3f} with {grid_params}")
    print(f"    TPE+ASHA: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in statuses.items() if n)}), "
          f"{total} epochs in {search_s:.0f} s; best completed val {max(completed, default=float('nan')):.3f}")
    reached = epochs_to_reach(rows, grid_best - WITHIN)
    if reached is None:
        print(f"(1) TPE+ASHA did not get within {WITHIN} of the grid's best ({grid_best:.3f}) in {len(rows)} trials: "
              f"more than {total} epochs = {100 * total / grid_epochs:.0f}% of the grid's {grid_epochs} (goal <= 30%)")
        return None
    used, hit = reached
    share = 100 * used / grid_epochs
    hit_params = {key: hit[f"config.{key}"] for key in grid_params}
    print(f"(1) TPE+ASHA got within {WITHIN} of the grid's best ({hit['val_score']:.3f} vs {grid_best:.3f}) at trial "
          f"{rows.index(hit) + 1} {hit_params}, after {used} epochs = {share:.0f}% of the grid's {grid_epochs} epochs "
          f"(goal <= 30%)")
    return share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small dataset, 3 epochs per trial (a smoke run)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, {os.cpu_count()} CPUs")
    if args.quick:
        figure_tpe_asha_vs_grid(epochs=3, synthetic={"actors": 6, "clips_per_actor": 8}, trials=10)
    else:
        figure_tpe_asha_vs_grid(epochs=12, synthetic={"actors": 24, "clips_per_actor": 16}, trials=2 * GRID_POINTS)
    ray.shutdown()


if __name__ == "__main__":
    main()
