"""Search efficiency: each sampler with ASHA against the exhaustive grid of the same space, and
against TPE.

On the synthetic task (lite preset, frozen backbone) the space is 3 fusion blocks x 3 learning
rates x 2 batch sizes. The grid runs every point to the full epoch budget; its best validation
score is that of its best point's best epoch (what model selection keeps). Each sampler
(``--samplers``, default tpe,gp,random,qmc; TPE, the default sampler, always runs first as the
baseline) then searches the same space with ASHA and the same budget per trial. The figures:
(1) per sampler, the epochs it ran, summed over its trials in the order they ran, until a trial
that completed the budget scored within 1 point (0.01 accuracy) of the grid's best, as a
percentage of the grid's epochs (goal <= 30% for TPE); (2) those epochs against TPE's, the
same count in the same process (below 1: fewer epochs than TPE). Only completed trials count:
a search chooses among them, never a pruned one. Each search gets up to twice as many trials
as the grid has points (10 with --quick); one that never gets there says so, and its ratio is
a lower bound. A search never trains a configuration twice (see PrunableOptunaSearch), so it
ends early once its sampler proposes only configurations it has run. The full run validates on
4 actors x 16 clips, where one clip is 1.6 points, so "within 1 point" means matching the
grid's best.

Every search goes through ``run_search``, so a config trains identically in all (same process
kind, one torch thread per trial). The grid's points go to ``run_search`` as its points to
evaluate and run without a scheduler, concurrency equal to the cores. The samplers' searches
run one trial at a time: with several, what a sampler has seen when it samples and which
results an ASHA rung holds depend on timing. Each sampler is seeded (``search.seed`` 0) and
training is deterministic on a CPU, so reruns agree; one seed is one draw of each sampler,
though. TPE and GP start with 10 trials from Optuna's RandomSampler seeded alike, so tpe, gp
and random propose the same first 10 trials: --quick (10 trials) cannot tell them apart, and
the full run (36) differs only after them. This space is all choices:
cmaes refuses it (CMA-ES searches int and float ranges), and nsga2 is for multi-objective
searches; a sampler the space refuses is reported as refused.

The synthetic dataset and its features live under $TACFN_HOME (default ~/.cache/tacfn), as
for ``tacfn search``.

    python benchmarks/search_efficiency.py [--quick] [--samplers tpe,gp,random,qmc]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import optuna
import ray
import torch

from tacfn.errors import ConfigError
from tacfn.search import SearchSpec, compile_space, grid, parse_space, run_search
from tacfn.store import ExperimentStore
from tacfn.tasks import default_cache_dir

BLOCKS = ("tacfn", "concat", "mult")
LEARNING_RATES = (3e-4, 1e-3, 3e-3)
BATCH_SIZES = (16, 32)
GRID_POINTS = len(BLOCKS) * len(LEARNING_RATES) * len(BATCH_SIZES)
WITHIN = 0.01  # one point of accuracy
BASELINE = "tpe"  # the default sampler, which the others are measured against
SAMPLERS = ("tpe", "gp", "random", "qmc")  # those that can search this space (all choices, one objective)


def efficiency_spec(
    name: str, epochs: int, synthetic: dict[str, int], *, trials: int, concurrency: int, scheduler: str, sampler: str = BASELINE
) -> SearchSpec:
    """The benchmark's space over the synthetic task, searched as ``scheduler`` and ``sampler`` say."""
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
                "sampler": sampler,
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


def run_sampler_asha(sampler: str, epochs: int, synthetic: dict[str, int], trials: int, root: Path) -> list[dict[str, Any]]:
    """``sampler`` with ASHA over the same space, one trial at a time; its trials in the order they ran."""
    spec = efficiency_spec(
        f"efficiency-{sampler}-asha", epochs, synthetic, trials=trials, concurrency=1, scheduler="asha", sampler=sampler
    )
    out = root / f"{sampler}-asha"
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


class _Reached(NamedTuple):
    """How far one sampler's search got: epochs run up to the first trial within reach of the
    grid's best (None if none got there), and epochs run in all."""

    used: int | None
    total: int


def figure_samplers_vs_grid(epochs: int, synthetic: dict[str, int], trials: int, samplers: list[str]) -> dict[str, float | None]:
    """(1) each sampler's epochs to reach the grid's best as a share of the grid's, and (2) against
    TPE's. Returns each sampler's share (None: it did not get there, or was refused)."""
    shares: dict[str, float | None] = {}
    reached: dict[str, _Reached] = {}
    accepted = []
    for sampler in samplers:  # before the grid's minutes: a name the space refuses is known at once
        try:
            efficiency_spec("efficiency-check", epochs, synthetic, trials=trials, concurrency=1, scheduler="asha", sampler=sampler)
        except ConfigError as err:
            print(f"(1) {sampler}: refused: {err}")
            shares[sampler] = None
        else:
            accepted.append(sampler)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        grid_best, grid_params, grid_epochs = run_grid(epochs, synthetic, root)
        grid_s = time.perf_counter() - t0
        print(f"    grid: {GRID_POINTS} points x {epochs} epochs = {grid_epochs} epochs in {grid_s:.0f} s; "
              f"best val {grid_best:.3f} with {grid_params}")
        for sampler in accepted:
            t0 = time.perf_counter()
            rows = run_sampler_asha(sampler, epochs, synthetic, trials, root)
            search_s = time.perf_counter() - t0
            shares[sampler], reached[sampler] = _report_search(sampler, rows, grid_best, grid_params, grid_epochs, search_s)
    _report_against_baseline(reached)
    return shares


def _report_search(
    sampler: str, rows: list[dict[str, Any]], grid_best: float, grid_params: dict[str, Any], grid_epochs: int, seconds: float
) -> tuple[float | None, _Reached]:
    name = f"{sampler}+ASHA"
    total = sum(row["epochs_run"] or 0 for row in rows)
    statuses = {s: sum(row["status"] == s for row in rows) for s in ("completed", "pruned", "failed", "diverged")}
    completed = [row["val_score"] for row in rows if row["status"] == "completed"]
    print(f"    {name}: {len(rows)} trials ({', '.join(f'{n} {s}' for s, n in statuses.items() if n)}), "
          f"{total} epochs in {seconds:.0f} s; best completed val {max(completed, default=float('nan')):.3f}")
    goal = " (goal <= 30%)" if sampler == BASELINE else ""
    hit = epochs_to_reach(rows, grid_best - WITHIN)
    if hit is None:
        print(f"(1) {name} did not get within {WITHIN} of the grid's best ({grid_best:.3f}) in {len(rows)} trials: "
              f"more than {total} epochs = {100 * total / grid_epochs:.0f}% of the grid's {grid_epochs}{goal}")
        return None, _Reached(None, total)
    used, row = hit
    share = 100 * used / grid_epochs
    hit_params = {key: row[f"config.{key}"] for key in grid_params}
    print(f"(1) {name} got within {WITHIN} of the grid's best ({row['val_score']:.3f} vs {grid_best:.3f}) at trial "
          f"{rows.index(row) + 1} {hit_params}, after {used} epochs = {share:.0f}% of the grid's {grid_epochs} epochs{goal}")
    return share, _Reached(used, total)


def _report_against_baseline(reached: dict[str, _Reached]) -> None:
    """(2) Each sampler's epochs to reach the grid's best over TPE's: a bound where one did not get there."""
    base = reached.get(BASELINE)
    if base is None:
        return
    for sampler, this in reached.items():
        if sampler == BASELINE:
            continue
        if base.used is None and this.used is None:
            ratio = "neither got there"
        elif base.used is None:
            ratio = f"< {this.used / base.total:.2f}x ({BASELINE} did not get there in {base.total} epochs)"
        elif this.used is None:
            ratio = f"> {this.total / base.used:.2f}x (it did not get there in {this.total} epochs)"
        else:
            ratio = f"{this.used / base.used:.2f}x ({this.used} vs {base.used} epochs)"
        print(f"(2) {sampler}+ASHA / {BASELINE}+ASHA epochs to reach the grid's best: {ratio}")


def _samplers(text: str) -> list[str]:
    """The ``--samplers`` list, TPE first (the baseline), each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    return list(dict.fromkeys([BASELINE, *names]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small dataset, 3 epochs per trial (a smoke run)")
    parser.add_argument("--samplers", type=_samplers, default=list(SAMPLERS),
                        help=f"comma-separated search.sampler names (default {','.join(SAMPLERS)}); {BASELINE}, the baseline, always runs first")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"torch {torch.__version__}, ray {ray.__version__}, optuna {optuna.__version__}, {os.cpu_count()} CPUs")
    if args.quick:
        figure_samplers_vs_grid(epochs=3, synthetic={"actors": 6, "clips_per_actor": 8}, trials=10, samplers=args.samplers)
    else:
        figure_samplers_vs_grid(
            epochs=12, synthetic={"actors": 24, "clips_per_actor": 16}, trials=2 * GRID_POINTS, samplers=args.samplers
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
