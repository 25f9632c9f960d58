"""What a seed-aware search pays to run a configuration's replicates as separate Tune trials.

Issue 20 asks whether a configuration's (seed, fold) replicates should run as separate Tune
trials (what ``search.seeds`` does: one trial per replicate, an actor reused from trial to
trial, the data from Ray's object store) or one after another in one trial's process. This
measures both on the same replicates, in the same process and Ray runtime:

(a) separate trials: tacfn's own trial function (``run_trial``, through the search's
    ``_trial_trainable``), one Tune trial per seed, ``reuse_actors`` on, at most C at a time;
(b) one process: a Tune trial that trains the seeds one after another with the same Trainer
    on the same shared features, saving and reporting a checkpoint after each, as (a) does;
    at C = 2, two such trials, each with half of the seeds.

Both read the features from the same ``shared_tasks`` (prepared once before anything is
timed) and train the same epochs (the lite preset, frozen pretrained encoders, the ground-truth
recipe, TACFN with separate pooling). It prints the wall time of ``Tuner.fit`` for each, per
replicate, and (a) / (b): above 1, separate trials cost more. Each is run ``--repeats`` times,
alternating, and the fastest kept.

    python benchmarks/replicate_cost.py [--seeds 6] [--epochs 10] [--repeats 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ray import tune

from tacfn.run_folder import LAST_CHECKPOINT
from tacfn.search._racing import Race
from tacfn.search._ray import init_ray
from tacfn.search._runner import _trial_trainable, shared_tasks
from tacfn.search._space_schema import SearchSettings
from tacfn.search._trainable import encoder_identity, trial_run_config
from tacfn.training import RunState, Trainer, run_epochs

BASE: dict[str, Any] = {
    "model": {"preset": "lite", "backbone": "frozen", "pretrain": {"epochs": 3},
              "fusion": {"name": "tacfn", "attended_pool": "separate"}},
    "data": {"protocol": "6fold", "fold": 0, "synthetic": {"clips_per_actor": 40}},
    "train": {"epochs": 10, "batch_size": 16, "lr": 0.002},
}


def _in_one_process(config: dict[str, Any], *, base: dict[str, Any], shared: dict[str, Any]) -> None:
    """Train ``config["seeds"]`` one after another in this trial's process (way (b))."""
    folder = Path(tempfile.mkdtemp(prefix="tacfn-replicates-"))
    try:
        for seed in config["seeds"]:
            cfg = trial_run_config(base, {"train.seed": seed}, check_model=False)
            trainer = Trainer(cfg, shared[encoder_identity(cfg)])
            state = RunState()
            for _ in run_epochs(trainer, state):
                pass
            trainer.save_checkpoint(folder / LAST_CHECKPOINT, trainer.checkpoint_state(state))
            best = max(record.val_score for record in state.history)
            tune.report({"seed": seed, "best_val_score": best}, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fit(trainable, param_space: dict[str, Any], concurrency: int, storage: Path) -> float:
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=concurrency),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    t0 = time.perf_counter()
    grid = tuner.fit()
    seconds = time.perf_counter() - t0
    assert not grid.errors, grid.errors
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6, help="replicates of the one configuration")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = {**BASE, "train": {**BASE["train"], "epochs": args.epochs}}
    seeds = list(range(args.seeds))
    settings = SearchSettings(seeds=seeds, resources={"cpu": 1, "gpu": 0}, checkpoint_interval_s=3600)
    tasks = shared_tasks(base, Race(settings, 0, 0), progress=True)
    assert len(tasks) == 1, "pretrained encoders: every seed of the fold shares one copy of the features"
    init_ray(None)
    work = Path(tempfile.mkdtemp(prefix="tacfn-replicate-cost-"))
    separate = _trial_trainable(settings, base, tasks, work / "separate")
    one = tune.with_resources(tune.with_parameters(_in_one_process, base=base, shared=tasks), {"cpu": 1})
    print(f"{args.seeds} replicates of one configuration, {args.epochs} epochs each (lite, frozen, TACFN separate pooling)")
    for concurrency in (1, 2):
        halves = [seeds[i::concurrency] for i in range(concurrency)]
        a, b = [], []
        for repeat in range(args.repeats):
            a.append(_fit(separate, {"train.seed": tune.grid_search(seeds)}, concurrency, work / f"a{concurrency}{repeat}"))
            b.append(_fit(one, {"seeds": tune.grid_search(halves)}, concurrency, work / f"b{concurrency}{repeat}"))
        print(f"C={concurrency}: (a) separate Tune trials {min(a):6.1f} s ({min(a) / args.seeds:.2f} s per replicate); "
              f"(b) one process {min(b):6.1f} s ({min(b) / args.seeds:.2f} s per replicate); (a) / (b) = {min(a) / min(b):.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
