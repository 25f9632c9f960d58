"""How often is an ablation verdict wrong? Repeat a small plan on fresh synthetic data.

Each repetition writes two fresh datasets (a new data seed each time): one with every effect
planted (TACFN can read the cross-modal bit, concat cannot: a real difference) and one planted
null (``--effects audio,video``: nothing for TACFN to read that concat cannot). On each it runs
the shipped ``ablation_ground_truth`` recipe with two variants, TACFN and concat, on paired
seeds and folds, through the real ``run_ablation`` (local Ray), and reads the verdict the
dashboard gives. It prints:

- power: the share of planted repetitions whose verdict finds TACFN better (goal >= 80%);
- false-positive rate: the share of null repetitions whose verdict finds TACFN better, an effect
  that was not planted (goal <= 5%); beside it, the share with any verdict but inconclusive: on
  the null TACFN can be truly, slightly worse than concat (a larger model on data where both are
  capped at 0.5), which is no false discovery of the planted effect;

each with a 95% Clopper-Pearson interval, and the wall and CPU time it took.

    python benchmarks/ablation_calibration.py            # 4 repetitions (within 30 min on 2 cores)
    python benchmarks/ablation_calibration.py --quick    # 1 repetition: a smoke run

By default every fold runs once (one seed): pairs that share a test fold are not independent,
and the paired test would overstate what they show.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from scipy import stats

from dashboards import ablation_table, load_experiment
from tacfn.nested import apply_overrides
from tacfn.search import load_plan, parse_plan, run_ablation

BASELINE, VARIANT = "concat", "tacfn"


def _verdict(root: Path, data_seed: int, effects: list[str], seeds: list[int], folds: list[int], clips: int) -> tuple[str, float]:
    """The verdict on TACFN against concat, and the mean paired difference."""
    shipped = load_plan("ablation_ground_truth")
    base = apply_overrides(shipped.base, {
        "data.cache_dir": str(root / "cache"),
        "data.synthetic.seed": data_seed,
        "data.synthetic.effects": effects,
        "data.synthetic.clips_per_actor": clips,
    })
    plan = parse_plan({
        **shipped.model_dump(mode="json"), "name": f"calibration_{data_seed}_{'_'.join(effects)}", "base": base,
        "baseline": BASELINE, "variants": {v: shipped.variants[v] for v in (BASELINE, VARIANT)},
        "seeds": seeds, "folds": folds,
    }, "calibration plan")
    out = root / plan.name
    run_ablation(plan, out, quiet=True)
    table = ablation_table(load_experiment(out))
    row = next(r for r in table.iter_rows(named=True) if r["variant"] == VARIANT)
    return row["verdict"], row["diff"]


def _rate(hits: int, n: int) -> str:
    low, high = stats.binomtest(hits, n).proportion_ci(0.95, method="exact")
    return f"{hits}/{n} = {hits / n:.0%} (95% Clopper-Pearson [{low:.0%}, {high:.0%}])"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4, help="repetitions, each on two fresh datasets (default 4)")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per fold (default 1)")
    parser.add_argument("--folds", type=int, default=6, help="folds (default 6: 6 pairs on 6 independent test folds)")
    parser.add_argument("--clips", type=int, default=40, help="clips per actor (default 40, the recipe's)")
    parser.add_argument("--quick", action="store_true", help="1 repetition: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.reps = 1
    seeds, folds = list(range(args.seeds)), list(range(args.folds))
    t0, cpu0 = time.perf_counter(), os.times()
    detected = false_positive = any_verdict = 0
    with tempfile.TemporaryDirectory(prefix="tacfn-calibration-") as tmp:
        for rep in range(args.reps):
            data_seed = 1000 + rep
            planted, planted_diff = _verdict(Path(tmp), data_seed, ["audio", "video", "cross"], seeds, folds, args.clips)
            null, null_diff = _verdict(Path(tmp), data_seed, ["audio", "video"], seeds, folds, args.clips)
            detected += planted == "better"
            false_positive += null == "better"
            any_verdict += null != "inconclusive"
            print(f"rep {rep + 1}/{args.reps} (data seed {data_seed}): planted: tacfn {planted} ({planted_diff:+.3f}); "
                  f"null: tacfn {null} ({null_diff:+.3f})  [{time.perf_counter() - t0:.0f} s]", flush=True)
    wall = time.perf_counter() - t0
    cpu1 = os.times()
    own = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"\n{len(seeds)} seeds x {len(folds)} folds = {len(seeds) * len(folds)} pairs per verdict, {args.clips} clips per actor")
    print(f"power (planted effect found: tacfn better than concat): {_rate(detected, args.reps)}; goal >= 80%")
    print(f"false-positive rate (planted null, tacfn better): {_rate(false_positive, args.reps)}; goal <= 5%")
    print(f"planted null, any verdict but inconclusive: {_rate(any_verdict, args.reps)}")
    print(f"wall {wall:.0f} s on {os.cpu_count()} cores; CPU {own:.0f} s in this process, "
          f"{children.ru_utime + children.ru_stime:.0f} s in reaped child processes (Ray's workers are not reaped here)")


if __name__ == "__main__":
    main()
