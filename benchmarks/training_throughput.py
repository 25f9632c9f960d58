"""Training throughput, three figures measured in one process on this machine.

1. Samples/s of a lite training epoch fed from the prepared Arrow dataset, against the same
   epoch decoding every mp4 (PyAV frames + librosa MFCCs) as the released code does. Goal >= 20x.
2. The paper preset's time per training sample, frozen backbone (cached encoder features)
   against finetune (encoders train), on real prepared paper-size clips.
3. For a frozen-mode epoch of the paper preset, the FLOP/s achieved (FLOPs counted with
   torch.utils.flop_counter) divided by the FLOP/s torch reaches running the epoch's own matrix
   multiplications (same shapes, same count) back to back. Goal >= 0.5: the epoch is bound by
   arithmetic, not by Python overhead or data loading. A last line gives the same epoch and
   ratio with the paper's dropouts at 0: on a CPU whose dropout masks PyTorch draws one
   random number at a time (any but Intel's), they take a large share of the epoch.

    python benchmarks/training_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from tacfn.config import parse_run_config
from tacfn.data.media import read_clip
from tacfn.data.prepare import prepare_ravdess
from tacfn.data.prepared import PreparedDataset
from tacfn.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, LITE_PREPROCESS, PAPER_PREPROCESS
from tacfn.data.ravdess import scan_ravdess
from tacfn.data.synth import write_synthetic_ravdess
from tacfn.tasks import load_task
from tacfn.training import Trainer

_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default, torch.ops.aten.baddbmm.default}


class _MatmulShapes(TorchDispatchMode):
    """Records the operand shapes of every matrix multiplication dispatched."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _MATMULS:
            a, b = (args[1], args[2]) if func in (torch.ops.aten.addmm.default, torch.ops.aten.baddbmm.default) else args[:2]
            self.calls.append(("bmm" if a.dim() == 3 else "mm", tuple(a.shape), tuple(b.shape)))
        return func(*args, **(kwargs or {}))


def _run_config(data: Path, cache: Path, preset: str, backbone: str, batch_size: int, fusion: dict | None = None) -> object:
    return parse_run_config(
        {
            "model": {"preset": preset, "backbone": backbone, "fusion": fusion or {}},
            "data": {"path": str(data), "cache_dir": str(cache)},
            "train": {"epochs": 1, "batch_size": batch_size, "seed": 0, "device": "cpu"},
        }
    )


def _decode_batch(clips, positions: np.ndarray, cfg) -> dict[str, torch.Tensor]:
    """What the released code does each epoch: decode media and compute MFCCs per clip."""
    videos, audios = [], []
    for p in positions:
        arrays = read_clip(clips[p].path, clips[p].landmarks, cfg)
        videos.append(arrays.video)
        audios.append(arrays.mfcc)
    video = torch.from_numpy(np.stack(videos)).float().div_(255).permute(0, 4, 1, 2, 3)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    labels = torch.tensor([clips[p].label for p in positions])
    return {"video": (video - mean) / std, "audio": torch.from_numpy(np.stack(audios)), "label": labels}


def figure_1_prepared_vs_decoding(root: Path, actors: int, clips_per_actor: int) -> float:
    raw, prepared = root / "raw-lite", root / "prepared-lite"
    write_synthetic_ravdess(raw, actors=actors, clips_per_actor=clips_per_actor, seed=0)
    prepare_ravdess(raw, prepared, LITE_PREPROCESS)
    cfg = _run_config(prepared, root / "cache", "lite", "finetune", 16)
    trainer = Trainer(cfg, load_task(cfg))
    for e in range(2):  # warm-up
        trainer.train_epoch(e)
    n = len(trainer.task.train)
    t0 = time.perf_counter()
    trainer.train_epoch(1)
    arrow_rate = n / (time.perf_counter() - t0)

    by_id = {c.clip_id: c for c in scan_ravdess(raw).clips}
    clips = [by_id[i] for i in trainer.task.train.ids]
    decoding = replace(trainer.task.train, batch=lambda pos: _decode_batch(clips, pos, LITE_PREPROCESS))
    trainer.task = replace(trainer.task, train=decoding)
    t0 = time.perf_counter()
    trainer.train_epoch(1)
    decode_rate = n / (time.perf_counter() - t0)
    ratio = arrow_rate / decode_rate
    print(f"(1) lite epoch, {n} clips: prepared Arrow {arrow_rate:.1f} samples/s, decoding media {decode_rate:.1f} samples/s "
          f"-> {ratio:.1f}x (goal >= 20x)")
    return ratio


def _time_epochs(trainer: Trainer, epochs: int) -> float:
    t0 = time.perf_counter()
    for e in range(epochs):
        trainer.train_epoch(e)
    return (time.perf_counter() - t0) / epochs


def figures_2_3_paper(root: Path, actors: int, clips_per_actor: int, finetune_batches: int, frozen_epochs: int) -> None:
    raw, prepared = root / "raw-paper", root / "prepared-paper"
    write_synthetic_ravdess(raw, actors=actors, clips_per_actor=clips_per_actor, seed=0)
    prepare_ravdess(raw, prepared, PAPER_PREPROCESS)
    dataset = PreparedDataset(prepared)

    # (2) finetune: full forward + backward through the 3D ResNeXt-50, a few batches of 2.
    cfg = _run_config(prepared, root / "cache", "paper", "finetune", 2)
    finetune = Trainer(cfg, load_task(cfg))
    split = finetune.task.train
    times = []
    for b in range(finetune_batches + 1):
        batch = split.batch(np.arange(2 * b, 2 * b + 2) % len(split))
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(finetune.model({k: v for k, v in batch.items() if k != "label"}), batch["label"])
        finetune.optimizer.zero_grad()
        loss.backward()
        finetune.optimizer.step()
        times.append((time.perf_counter() - t0) / 2)
    finetune_per_sample = float(np.mean(times[1:]))  # the first batch warms up
    del finetune

    # Frozen: encoders run once into the feature cache, then the paper's batch of 16.
    cfg = _run_config(prepared, root / "cache", "paper", "frozen", 16)
    t0 = time.perf_counter()
    frozen = Trainer(cfg, load_task(cfg))
    encode_s = time.perf_counter() - t0
    for e in range(3):  # warm-up: oneDNN prepares its kernels on the first calls at a shape
        frozen.train_epoch(e)
    n = len(frozen.task.train)
    epoch_s = _time_epochs(frozen, frozen_epochs)
    frozen_per_sample = epoch_s / n
    print(f"(2) paper preset, time per training sample: finetune {finetune_per_sample * 1e3:.1f} ms, "
          f"frozen {frozen_per_sample * 1e3:.3f} ms -> frozen is {finetune_per_sample / frozen_per_sample:.0f}x faster "
          f"(one-off encoding of {len(dataset)} clips into the cache: {encode_s:.1f} s)")

    # (3) achieved FLOP/s of a frozen epoch against the same matmuls run back to back.
    counter = FlopCounterMode(display=False)
    with counter:
        frozen.train_epoch(0)
    epoch_flops = counter.get_total_flops()
    shapes = _MatmulShapes()
    with shapes:
        frozen.train_epoch(0)
    operands = [(kind, torch.randn(a), torch.randn(b)) for kind, a, b in shapes.calls]
    matmul_flops = sum(2 * np.prod(a.shape) * b.shape[-1] for _, a, b in operands)

    def run_matmuls() -> None:
        for kind, a, b in operands:
            torch.bmm(a, b) if kind == "bmm" else torch.mm(a, b)

    run_matmuls()
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        run_matmuls()
    matmul_rate = matmul_flops * reps / (time.perf_counter() - t0)
    achieved = epoch_flops / epoch_s
    print(f"(3) paper frozen epoch: {epoch_flops / 1e9:.2f} GFLOP in {epoch_s * 1e3:.0f} ms = {achieved / 1e9:.1f} GFLOP/s; "
          f"its {len(operands)} matmuls alone: {matmul_rate / 1e9:.1f} GFLOP/s -> ratio {achieved / matmul_rate:.2f} (goal >= 0.5)")

    # Where the rest goes: the paper's dropouts. Attention dropout keeps PyTorch off its fused
    # CPU attention kernel, and each dropout draws a random number per element.
    no_dropout = {name: 0.0 for name in ("attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "head_dropout")}
    cfg = _run_config(prepared, root / "cache", "paper", "frozen", 16, fusion=no_dropout)
    plain = Trainer(cfg, load_task(cfg))
    for e in range(3):
        plain.train_epoch(e)
    plain_s = _time_epochs(plain, frozen_epochs)
    # The same arithmetic as the epoch with dropout, so its FLOP count holds: dropout adds no
    # FLOPs, and the fused CPU attention kernel (which flop_counter cannot count) does the
    # unfused path's matmuls.
    plain_rate = epoch_flops / plain_s
    print(f"    the same epoch with the paper's dropouts set to 0 (a diagnosis, not the paper's model): "
          f"{plain_s * 1e3:.0f} ms, against {epoch_s * 1e3:.0f} ms with them -> {plain_rate / 1e9:.1f} GFLOP/s, "
          f"ratio {plain_rate / matmul_rate:.2f}")


def _cpu_model() -> str:
    """The CPU's model name (Linux), which the figures depend on: PyTorch draws dropout masks
    with MKL's vectorised generator on Intel CPUs only, one number at a time elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller datasets, fewer batches (a smoke run)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {_cpu_model() or platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figure_1_prepared_vs_decoding(root, actors=6, clips_per_actor=8 if args.quick else 16)
        figures_2_3_paper(
            root,
            actors=6,
            clips_per_actor=8,  # encoding paper-size clips on a CPU takes seconds each
            finetune_batches=1 if args.quick else 3,
            frozen_epochs=2 if args.quick else 10,
        )


if __name__ == "__main__":
    main()
