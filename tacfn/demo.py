"""``tacfn demo``: the main job on embedded defaults, from nothing to a dashboard.

Synthesises the RAVDESS-format dataset, prepares it, trains the lite TACFN model on fold
0, and writes the run's dashboard. Everything lands under one folder.
"""

from __future__ import annotations

from pathlib import Path

from .config import parse_run_config
from .tasks import load_task
from .training import train


def run_demo(out: Path, *, epochs: int = 8) -> Path:
    """Run the demo into ``out``; returns the dashboard's path."""
    from dashboards.run_report import write_run_report

    out = Path(out)
    cfg = parse_run_config(
        {
            "model": {"preset": "lite", "fusion": {"name": "tacfn"}},
            "data": {"cache_dir": str(out / "cache")},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 1e-3, "seed": 0},
        },
        "demo",
    )
    print(f"[1/3] synthetic RAVDESS dataset -> {out / 'cache'}", flush=True)
    task = load_task(cfg, progress=True)
    print(f"      {len(task.train)} train / {len(task.val)} validation / {len(task.test)} test clips ({task.description})")
    print(f"[2/3] training lite TACFN for {epochs} epochs", flush=True)
    run_dir = out / "run"

    def show(r):
        print(f"      epoch {r.epoch}/{epochs}: train acc {r.train_score:.3f}, val acc {r.val_score:.3f} ({r.seconds:.1f} s)", flush=True)

    result = train(cfg, task=task, out_dir=run_dir, on_epoch=show)
    print(f"      test accuracy {result.test.get('score', float('nan')):.3f} at best epoch {result.best_epoch} (chance 0.125)")
    print("[3/3] dashboard", flush=True)
    dashboard = write_run_report(run_dir)
    print(f"open {dashboard.resolve()}")
    return dashboard
