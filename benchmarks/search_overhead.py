"""Search overhead, two figures measured on this machine.

1. The same 16 short trials (the lite preset, frozen backbone, on the synthetic dataset:
   4 fusion blocks x 2 learning rates x 2 batch sizes, 12 epochs each; 2 with --quick) run
   (a) back to back in bare PyTorch, ``tacfn.training.train`` on each config with the task
   prepared once, and (b) through the search path, ``run_search`` (Ray Tune, Optuna, the
   results store, the chosen config scored on test) with concurrency equal to the cores.
   Prints (b) / ((a) / concurrency); goal <= 1.10. (a) runs with as many torch threads as a
   trial gets (one per trial CPU), so the ratio measures what the search layer adds, not how
   well a small model uses several threads. Ray's start-up is reported on its own line and is
   not in (b). A third run, (a'), hands the trials to concurrency bare processes started at
   once, the next trial to whichever is free: its ratio to (a) / concurrency is what this
   machine loses running trials side by side (process start-up, shared caches and memory
   bandwidth, the last trial running alone), before any search layer. A last line sums the
   trials' epoch times in (a), (a') and (b): how much slower the same epochs run side by side
   on this machine, the part of the ratio that start-up, gaps and an idle tail do not explain.
2. Peak resident memory (VmHWM) of a trial process that reads frozen-encoder features from
   Ray's object store, as a search's trials do, against one that loads its own copy from the
   feature-cache file. The features are the paper preset's encoder outputs (video
   (2048, 2, 7, 7), audio (64, 26), float16) for a few hundred clip ids, generated straight
   into a FeatureCache: running the paper encoders on a CPU would take too long. Both trials
   hold the features in shared pages (object-store memory, or the page cache behind the
   memory-mapped file), so on one node they differ by what opening the file costs in private
   memory; across nodes the object store also brings one copy to each node, where the cache
   file may not exist at all.

(b) gives the 16 configs to ``run_search`` as its points to evaluate, which Optuna hands out
before it samples any.

The synthetic dataset and its features live under $TACFN_HOME (default ~/.cache/tacfn), as for
``tacfn search``; they are built before anything is timed. Linux only (reads /proc/self/status).

    python benchmarks/search_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
import torch

from tacfn.config import parse_run_config
from tacfn.data.feature_cache import CachedFeatures, FeatureCache, cache_key, encode_to_cache
from tacfn.model import create_model
from tacfn.search import SearchSpec, compile_space, grid, init_ray, parse_space, run_search, trial_run_config
from tacfn.store import ExperimentStore
from tacfn.tasks import default_cache_dir, load_task
from tacfn.training import Trainer, train

BLOCKS = ("tacfn", "concat", "late_average", "mult")
LEARNING_RATES = (1e-3, 3e-3)
BATCH_SIZES = (16, 32)


def overhead_spec(epochs: int, synthetic: dict[str, int], concurrency: int) -> SearchSpec:
    """A space whose grid is the 16 trial configs; trials go one per CPU, no early stopping."""
    return parse_space(
        {
            "name": "search-overhead",
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
                "trials": len(BLOCKS) * len(LEARNING_RATES) * len(BATCH_SIZES),
                "concurrency": concurrency,
                "scheduler": "none",
                "resources": {"cpu": 1, "gpu": 0},
            },
        },
        "search_overhead",
    )


def check_trials(store: ExperimentStore, spec: SearchSpec, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The store's trial rows, after checking they are exactly ``points``, all completed."""
    rows = store.trials().to_pylist()
    keys = list(spec.space)
    ran = sorted(tuple(row[f"config.{key}"] for key in keys) for row in rows)
    if ran != sorted(tuple(point[key] for key in keys) for point in points):
        raise RuntimeError("the search did not run exactly the given trial configs")
    if any(row["status"] != "completed" for row in rows):
        raise RuntimeError(f"not every search trial completed: {[row['status'] for row in rows]}")
    return rows


_worker_task = None  # (a'): each worker process's task, loaded once by its initializer


def _load_task(base: dict[str, Any], threads: int) -> None:
    global _worker_task
    torch.set_num_threads(threads)
    cfg = parse_run_config(base, "base")
    _worker_task = Trainer(cfg, load_task(cfg)).task


def _bare_trial(base: dict[str, Any], point: dict[str, Any]) -> tuple[str, float]:
    """A trial's status and the seconds its epochs took."""
    result = train(trial_run_config(base, point), task=_worker_task, evaluate_test=False)
    return result.status, sum(record.seconds for record in result.history)


def bare_in_parallel(base: dict[str, Any], points: list[dict[str, Any]], threads: int, processes: int) -> tuple[float, float]:
    """Seconds for ``processes`` bare processes (spawned, the cached features loaded in
    each) to run ``points``, each taking the next trial when it is free as a search's trial
    processes do: what the machine gives several trials at once, with no search layer.
    Also returns the seconds the trials' epochs took, summed over trials."""
    context = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_load_task, initargs=(base, threads)) as pool:
        outcomes = list(pool.map(_bare_trial, [base] * len(points), points))
    statuses = [status for status, _ in outcomes]
    if set(statuses) != {"completed"}:
        raise RuntimeError(f"not every bare trial completed: {statuses}")
    return time.perf_counter() - t0, sum(seconds for _, seconds in outcomes)


def figure_1_search_vs_bare(epochs: int, synthetic: dict[str, int]) -> float:
    concurrency = os.cpu_count() or 1
    spec = overhead_spec(epochs, synthetic, concurrency)
    points = grid(compile_space(spec))
    base = spec.base
    threads = int(spec.search.resources.cpu)

    # Build the dataset and its feature cache first: neither side below pays for that.
    base_cfg = parse_run_config(base, "base")
    Trainer(base_cfg, load_task(base_cfg, progress=True))

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    task = Trainer(base_cfg, load_task(base_cfg)).task  # the cached features, loaded once
    bare_epochs_s = 0.0
    for point in points:
        result = train(trial_run_config(base, point), task=task, evaluate_test=False)
        if result.status != "completed":
            raise RuntimeError(f"bare trial {point} ended {result.status}: {result.error}")
        bare_epochs_s += sum(record.seconds for record in result.history)
    bare_s = time.perf_counter() - t0
    parallel_s, parallel_epochs_s = bare_in_parallel(base, points, threads, concurrency)

    t0 = time.perf_counter()
    init_ray(None)
    startup_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "search"
        t0 = time.perf_counter()
        run_search(spec, out, quiet=True, points=points)
        search_s = time.perf_counter() - t0
        store = ExperimentStore(out)
        rows = check_trials(store, spec, points)
        search_epochs_s = sum(store.epochs().column("seconds").to_pylist())
    processes = len({row["worker"] for row in rows})

    ratio = search_s / (bare_s / concurrency)
    print(f"    Ray start-up (not in (b)): {startup_s:.1f} s; (a) takes {bare_s / len(points):.2f} s per trial "
          f"on average; (b) ran its {len(points)} trials in {processes} trial processes")
    print(f"(1) {len(points)} trials of {epochs} epochs: (a) bare PyTorch back to back {bare_s:.1f} s "
          f"({threads} torch thread{'s' if threads > 1 else ''}), (b) run_search with concurrency {concurrency} "
          f"{search_s:.1f} s -> (b) / ((a) / {concurrency}) = {ratio:.2f} (goal <= 1.10)")
    print(f"    (a') the same trials in {concurrency} bare processes at once (spawned, features loaded in each): "
          f"{parallel_s:.1f} s = {parallel_s / (bare_s / concurrency):.2f} x (a) / {concurrency}: what running "
          f"{concurrency} trials at once costs on this machine before any search layer; (b) / (a') = {search_s / parallel_s:.2f}")
    print(f"    the trials' epochs, summed: (a) {bare_epochs_s:.1f} s, (a') {parallel_epochs_s:.1f} s, (b) {search_epochs_s:.1f} s: "
          f"run side by side, the same epochs take {parallel_epochs_s / bare_epochs_s:.2f}x (a') and "
          f"{search_epochs_s / bare_epochs_s:.2f}x (b) as long as back to back: with no start-up, gaps or idle tail at all, "
          f"(b) / ((a) / {concurrency}) would be {search_epochs_s / bare_epochs_s:.2f}")
    return ratio


def memory_status() -> dict[str, float]:
    """Peak and current resident memory of this process, MiB (Linux /proc/self/status)."""
    wanted = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in wanted:
                status[name] = int(value.split()[0]) / 1024  # kB -> MiB
    return status


def read_epoch(features: CachedFeatures, batch_size: int = 16) -> None:
    """Fetch every row once, batch by batch, as a training epoch on cached features does."""
    rows = np.random.default_rng(0).permutation(len(features))
    for start in range(0, len(rows), batch_size):
        features.batch(rows[start : start + batch_size])


@ray.remote(num_cpus=1, max_calls=1)
def trial_memory(shared: CachedFeatures | None, own: tuple[str, str] | None) -> dict[str, float]:
    """Memory of a fresh trial process after one epoch's reads of the features.

    The features come through the object store (``shared``, zero-copy, as ``run_search``
    hands them to its trials), from the cache file (``own``: root and key, memory-mapped, as
    a trial whose encoders differ from the search's loads them), or not at all (both None).
    """
    import tacfn.training  # noqa: F401  (what a trial imports)

    if shared is not None:
        read_epoch(shared)
    elif own is not None:
        read_epoch(FeatureCache(Path(own[0])).load(own[1]))
    return memory_status()


def paper_feature_cache(root: Path, clips: int) -> CachedFeatures:
    """Random features of the paper preset's encoder output shapes, for ``clips`` clip ids."""
    with torch.device("meta"):
        shapes = {m.name: m.shape for m in create_model("paper", backbone="frozen").feature_spec.modalities}
    clip_ids = [f"synthetic-{i:05d}" for i in range(clips)]
    generator = torch.Generator().manual_seed(0)

    def batches():
        for start in range(0, clips, 32):
            ids = clip_ids[start : start + 32]
            yield ids, {name: torch.randn(len(ids), *shape, generator=generator) for name, shape in shapes.items()}

    key = cache_key("paper-encoders-synthetic", "random", "benchmark")
    return encode_to_cache(lambda features: features, batches(), FeatureCache(root), key)


def figure_2_shared_vs_own_memory(clips: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        features = paper_feature_cache(Path(tmp), clips)
        size = features.path.stat().st_size / 2**20
        init_ray(None)  # a fresh runtime: no worker has run anything yet, so each call gets a new process
        idle = ray.get(trial_memory.remote(None, None))
        shared = ray.get(trial_memory.remote(ray.put(features), None))
        own = ray.get(trial_memory.remote(None, (str(features.path.parent), features.key)))
    print(f"    features: {clips} clips of the paper preset, {size:.0f} MiB on disk; an idle trial process peaks at "
          f"{idle['VmHWM']:.0f} MiB")
    for name, status in (("shared", shared), ("own copy", own)):
        print(f"    {name:>8}: peak {status['VmHWM']:.0f} MiB; at the end {status['RssAnon']:.0f} MiB private, "
              f"{status['RssShmem']:.0f} MiB object-store pages, {status['RssFile']:.0f} MiB file pages")
    ratio = own["VmHWM"] / shared["VmHWM"]
    print(f"(2) peak RSS of a trial process reading the features once: shared through the object store "
          f"{shared['VmHWM']:.0f} MiB, own copy from the cache file {own['VmHWM']:.0f} MiB "
          f"-> own / shared = {ratio:.2f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small dataset, 2 epochs per trial (a smoke run)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs")
    if args.quick:
        figure_1_search_vs_bare(epochs=2, synthetic={"actors": 6, "clips_per_actor": 8})
    else:
        figure_1_search_vs_bare(epochs=12, synthetic={"actors": 24, "clips_per_actor": 16})
    ray.shutdown()
    figure_2_shared_vs_own_memory(clips=96 if args.quick else 384)
    ray.shutdown()


if __name__ == "__main__":
    main()
