"""GPU packing and the paper preset on a GPU, two figures measured in one process.

1. Trials per hour of the same search (the paper preset, frozen backbone, on the synthetic
   RAVDESS-format dataset prepared at paper size; fixed trial configs, no early stopping)
   with 4 trials sharing each GPU (``resources.gpu: 0.25``, concurrency 4 per GPU) against
   one trial per GPU (``gpu: 1``). Goal >= 2.5x: a frozen-backbone trial trains fusion and
   head only, far too little work to fill a GPU on its own.
2. The paper preset's training samples/s on one GPU with bf16 autocast: finetune (the 3D
   ResNeXt-50 and the MFCC CNN train) against frozen (cached encoder features).

The encoders run once (on the GPU) into the feature cache before anything is timed; the
dataset and its features live under $TACFN_HOME as for ``tacfn search``. Needs a CUDA GPU:
without one it says so and exits 0, so it can sit in any benchmark sweep.

    python benchmarks/gpu_packing.py [--trials 16] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tacfn.config import parse_run_config
from tacfn.search import compile_space, grid, init_ray, parse_space, run_search
from tacfn.store import ExperimentStore
from tacfn.tasks import default_cache_dir, load_task
from tacfn.training import Trainer

SYNTHETIC = {"actors": 6, "clips_per_actor": 16, "seed": 0}
BLOCKS = ("tacfn", "concat", "late_average", "mult")


def _base(epochs: int, backbone: str = "frozen", batch_size: int = 16) -> dict:
    return {
        "model": {"preset": "paper", "backbone": backbone},
        "data": {"synthetic": SYNTHETIC, "cache_dir": str(default_cache_dir())},
        "train": {"epochs": epochs, "batch_size": batch_size, "seed": 0, "device": "cuda", "amp": True},
    }


def _spec(trials: int, epochs: int, gpu: float, concurrency: int, cpus_per_trial: float):
    lrs = [float(lr) for lr in np.geomspace(3e-4, 3e-3, max(1, trials // len(BLOCKS)))]
    return parse_space(
        {
            "name": f"gpu-packing-{gpu}",
            "base": _base(epochs),
            "space": {"model.fusion.name": {"choice": list(BLOCKS)}, "train.lr": {"choice": lrs}},
            "search": {
                "trials": len(BLOCKS) * len(lrs),
                "concurrency": concurrency,
                "scheduler": "none",
                "resources": {"cpu": cpus_per_trial, "gpu": gpu},
            },
        },
        "gpu_packing",
    )


def _trials_per_hour(trials: int, epochs: int, gpu: float, gpus: int) -> float:
    per_gpu = round(1 / gpu)
    concurrency = per_gpu * gpus
    cpus = max(1, (os.cpu_count() or 1) // concurrency)
    spec = _spec(trials, epochs, gpu, concurrency, cpus)
    points = grid(compile_space(spec))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_search(spec, Path(tmp) / "search", quiet=True, points=points)
        elapsed = time.perf_counter() - t0
        statuses = ExperimentStore(Path(tmp) / "search").trials().column("status").to_pylist()
    if statuses.count("completed") != len(points):
        raise RuntimeError(f"not every trial completed at gpu={gpu}: {statuses}")
    rate = len(points) / elapsed * 3600
    print(f"    gpu={gpu} per trial ({per_gpu} per GPU, {cpus} CPUs each): {len(points)} trials in {elapsed:.1f} s "
          f"-> {rate:.0f} trials/hour")
    return rate


def figure_1_packing(trials: int, epochs: int) -> float:
    gpus = torch.cuda.device_count()
    cfg = parse_run_config(_base(epochs), "base")
    Trainer(cfg, load_task(cfg, progress=True))  # synthesise, prepare and encode once, untimed
    init_ray(None)
    single = _trials_per_hour(trials, epochs, 1.0, gpus)
    packed = _trials_per_hour(trials, epochs, 0.25, gpus)
    print(f"(1) trials/hour on {gpus} GPU(s): 4 per GPU {packed:.0f} vs 1 per GPU {single:.0f} "
          f"-> {packed / single:.2f}x (goal >= 2.5x)")
    return packed / single


def _samples_per_s(backbone: str, batch_size: int, steps: int) -> float:
    cfg = parse_run_config(_base(1, backbone, batch_size), "base")
    trainer = Trainer(cfg, load_task(cfg))
    split = trainer.task.train
    order = np.arange(steps * batch_size) % len(split)
    batches = [split.batch(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]

    def step(batch: dict[str, torch.Tensor]) -> None:
        logits = trainer._logits(trainer.network, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"].to(trainer.device))
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()

    for batch in batches[:2]:  # warm-up: cuDNN picks its kernels at each shape
        step(batch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for batch in batches:
        step(batch)
    torch.cuda.synchronize()
    return len(order) / (time.perf_counter() - t0)


def figure_2_finetune_vs_frozen(steps: int) -> None:
    finetune = _samples_per_s("finetune", 8, steps)
    frozen = _samples_per_s("frozen", 16, steps)
    print(f"(2) paper preset on {torch.cuda.get_device_name()} (bf16 autocast): finetune {finetune:.1f} samples/s "
          f"(batch 8), frozen {frozen:.0f} samples/s (batch 16) -> frozen is {frozen / finetune:.0f}x faster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per packing run (a multiple of 4)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per mode in (2)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_packing: no CUDA GPU on this machine; nothing measured")
        return
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} x {torch.cuda.get_device_name()}")
    figure_1_packing(args.trials, args.epochs)
    figure_2_finetune_vs_frozen(args.steps)


if __name__ == "__main__":
    main()
