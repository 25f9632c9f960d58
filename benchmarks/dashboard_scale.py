"""How long the dashboard takes for a large search: 2,000 trials x 50 epochs.

Writes a synthetic store in the results-store format (experiment.json through
ExperimentStore.create; the three tables in one write each, since recording 2,000 trials one
by one rewrites the tables 2,000 times), then times ``write_dashboard`` and prints the HTML
size. With ``--browser`` it also times headless Chromium opening the page.

    python benchmarks/dashboard_scale.py [--trials 2000] [--epochs 50] [--browser]
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dashboards import write_dashboard
from tacfn.store import EPOCHS, PREDICTIONS, TRIALS, ExperimentStore

FUSIONS = ["tacfn", "concat", "late_average", "late_product", "mult"]
SPACE = {
    "model.fusion.name": {"choice": FUSIONS},
    "model.fusion.heads": {"choice": [1, 2, 4, 8]},
    "model.fusion.layers": {"int": [1, 3], "when": {"model.fusion.name": ["tacfn", "mult"]}},
    "model.modality_dropout.audio": {"float": [0.0, 0.5]},
    "train.lr": {"float": [1e-4, 1e-2], "log": True},
    "train.batch_size": {"int": [8, 32], "step": 8},
}


def _table(columns: dict[str, list], fixed: dict[str, pa.DataType]) -> pa.Table:
    """Columns as Arrow arrays, the store's fixed columns with their fixed types."""
    return pa.table({name: pa.array(values, type=fixed.get(name)) for name, values in columns.items()})


def write_store(root: Path, trials: int, epochs: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    spec = {
        "name": "scale",
        "base": {"model": {"preset": "lite"}, "train": {"epochs": epochs}},
        "space": SPACE,
        "search": {
            "metric": "val_score",
            "trials": trials,
            "concurrency": 8,
            "scheduler": "asha",
            "seed": seed,
            "objectives": ["num_parameters"],
        },
    }
    ExperimentStore.create(root, "search", "scale", spec)
    ids = [f"trial_{i:05d}" for i in range(trials)]
    fusion = rng.choice(FUSIONS, trials)
    lr = 10 ** rng.uniform(-4, -2, trials)
    final = 0.45 + 0.15 * (fusion == "tacfn") - 0.08 * np.abs(np.log10(lr) + 2.5) + rng.normal(0, 0.02, trials)
    epochs_run = np.where(rng.random(trials) < 0.6, epochs, rng.integers(2, epochs, trials))
    status = np.where(epochs_run == epochs, "completed", "pruned")
    start = datetime(2025, 3, 1, tzinfo=timezone.utc)
    started = [start + timedelta(seconds=30 * (i // 8)) for i in range(trials)]
    best = int(np.argmax(np.where(status == "completed", final, -1)))
    trials_columns = {
        "trial_id": ids,
        "status": status.tolist(),
        "seed": [seed] * trials,
        "fold": [0] * trials,
        "config_hash": [f"{i:016x}" for i in range(trials)],
        "val_score": final.tolist(),
        "best_epoch": epochs_run.tolist(),
        "epochs_run": epochs_run.tolist(),
        "test_score": [float(final[i] - 0.03) if i == best else None for i in range(trials)],
        "seconds": (epochs_run * 0.5).tolist(),
        "started_at": started,
        "finished_at": [t + timedelta(seconds=float(e) * 0.5) for t, e in zip(started, epochs_run)],
        "num_parameters": (50_000 + 40_000 * np.array([FUSIONS.index(f) for f in fusion])).tolist(),
        "config.model.fusion.name": fusion.tolist(),
        "config.model.fusion.heads": rng.choice([1, 2, 4, 8], trials).tolist(),
        "config.model.fusion.layers": rng.integers(1, 4, trials).tolist(),
        "config.model.modality_dropout.audio": rng.uniform(0, 0.5, trials).tolist(),
        "config.train.lr": lr.tolist(),
        "config.train.batch_size": rng.choice([8, 16, 24, 32], trials).tolist(),
        "worker": [f"10.0.0.{1 + i % 4}:{4100 + i % 8}" for i in range(trials)],
        "chosen": [i == best for i in range(trials)],
        "test_missing_audio": [float(final[i] - 0.13) if i == best else None for i in range(trials)],
        "test_missing_video": [float(final[i] - 0.2) if i == best else None for i in range(trials)],
    }
    epoch_ids = np.repeat(ids, epochs_run)
    epoch_numbers = np.concatenate([np.arange(1, n + 1) for n in epochs_run])
    progress = 1 - np.exp(-epoch_numbers / (epochs / 4))
    val = np.repeat(final, epochs_run) * progress
    epochs_columns = {
        "trial_id": epoch_ids.tolist(),
        "epoch": epoch_numbers.tolist(),
        "train_loss": (2.0 / epoch_numbers).tolist(),
        "train_score": (val + 0.08).tolist(),
        "val_loss": (2.1 / epoch_numbers).tolist(),
        "val_score": val.tolist(),
        "seconds": [0.5] * len(val),
    }
    labels = np.arange(240) % 8
    preds = np.where(rng.random(240) < final[best], labels, (labels + 1) % 8)
    predictions = {
        "trial_id": [ids[best]] * 240,
        "split": ["test"] * 240,
        "sample_id": [f"clip{i:03d}" for i in range(240)],
        "task": [None] * 240,
        "label": labels.tolist(),
        "pred": preds.tolist(),
    }
    for table, columns in ((EPOCHS, epochs_columns), (PREDICTIONS, predictions), (TRIALS, trials_columns)):
        pq.write_table(_table(columns, table.columns), root / table.file)
    return root


def time_browser(page: Path) -> float:
    chromium = shutil.which("chromium")
    if chromium is None:
        return math.nan
    with tempfile.TemporaryDirectory() as profile:
        t0 = time.perf_counter()
        command = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-unsafe-swiftshader",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ]
        subprocess.run(command, capture_output=True, check=True, timeout=600)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--browser", action="store_true", help="also time headless Chromium opening the page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = write_store(Path(tmp) / "scale", args.trials, args.epochs)
        print(f"store: {args.trials} trials x {args.epochs} epochs written in {time.perf_counter() - t0:.1f} s")
        write_dashboard([root], Path(tmp) / "warmup.html")  # imports and plotly.js read once
        t0 = time.perf_counter()
        page = write_dashboard([root], Path(tmp) / "dashboard.html")
        seconds = time.perf_counter() - t0
        print(f"dashboard HTML: {seconds:.2f} s to build, {page.stat().st_size / 1e6:.1f} MB")
        if args.browser:
            print(f"headless Chromium: {time_browser(page):.1f} s to load and draw every view")


if __name__ == "__main__":
    main()
