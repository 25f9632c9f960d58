"""What recording a trial costs as an experiment grows: the results store against today's
whole-table rewrite, one trial at a time.

Each trial is what a search records: one trials row (about 60 columns: config, metrics,
times), 50 epochs and 240 test predictions. The *baseline* records as the store did up to
schema version 2 (read each table, drop the trial's rows, append, write the table whole);
it is quadratic in total, so it stops at ``--baseline`` trials. The store appends to its
record log (:mod:`tacfn.store._log`). Printed per run: the cost of one record (median of
50 records) at 100, 1,000, 10,000 and 100,000 trials, the slowest record (a merge), the
total, last/first, bytes on disk, what a reader pays during the search
(``ExperimentStore.trials()``) and, once compacted, duckdb's, polars' and pandas' reads.
``--s3 N`` also records N trials on a moto S3 server on loopback, counting the requests.

    python benchmarks/store_scale.py            # 100,000 trials (the baseline to 2,000)
    python benchmarks/store_scale.py --quick    # 2,000 trials (the baseline to 1,000), S3 at 300
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tacfn.store import EPOCHS, PREDICTIONS, TRIALS, ExperimentStore, flatten_config

MARKS = (100, 1_000, 10_000, 100_000)
WINDOW = 50


def synthetic_trial(i: int, rng: np.random.Generator) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One search trial's row, 50 epochs and 240 predictions."""
    config = {
        "model": {"preset": "lite", "fusion": {"name": ["tacfn", "concat", "mult"][i % 3], "heads": int(rng.choice([1, 2, 4, 8]))},
                  "modality_dropout": {"audio": float(rng.uniform(0, 0.5)), "video": float(rng.uniform(0, 0.5))}},
        "train": {"lr": float(10 ** rng.uniform(-4, -2)), "batch_size": int(rng.choice([8, 16, 32])), "epochs": 50, "seed": i},
        "data": {"path": "/data/ravdess", "fold": i % 5 + 1, "protocol": "paper5", "cache_dir": "/cache"},
    }
    extra = {f"config.extra.k{k}": float(rng.uniform()) for k in range(30)}
    row = {"trial_id": f"t{i:06d}", "status": "completed", "seed": i, "fold": i % 5 + 1, "config_hash": f"{i:016x}",
           **flatten_config(config), **extra, "val_score": float(rng.uniform()), "val_weighted_f1": float(rng.uniform()),
           "best_epoch": 37, "epochs_run": 50, "seconds": 120.0, "num_parameters": 1_200_000, "node": "10.0.0.1"}
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "train_score": 0.5, "val_loss": 1.1 / e, "val_score": 0.5,
               "val_weighted_f1": 0.45, "seconds": 2.4} for e in range(1, 51)]
    predictions = [{"split": "test", "sample_id": f"clip{k:04d}", "label": k % 8, "pred": (k * 7) % 8} for k in range(240)]
    return row, epochs, predictions


class RewriteStore:
    """The store's recording up to schema version 2: every table read and rewritten whole."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)

    def record_trial(self, row: dict, epochs: list[dict], predictions: list[dict]) -> None:
        trial_id = row["trial_id"]
        for spec, rows in ((EPOCHS, epochs), (PREDICTIONS, predictions), (TRIALS, [row])):
            new = pa.Table.from_pylist([{**r, "trial_id": trial_id} for r in rows])
            path = self.root / spec.file
            if path.exists():
                old = pq.read_table(path)
                old = old.filter(pc.invert(pc.equal(old["trial_id"], trial_id)))
                new = pa.concat_tables([old, new], promote_options="permissive")
            tmp = path.with_suffix(".tmp")
            pq.write_table(new, tmp)
            os.replace(tmp, path)


def record(store: Any, n: int) -> tuple[list[float], float]:
    """Record ``n`` trials one by one; each record's seconds, and the total."""
    rng = np.random.default_rng(0)
    trials = [synthetic_trial(i, rng) for i in range(min(n, 1000))]
    costs = []
    t0 = time.perf_counter()
    for i in range(n):
        row, epochs, predictions = trials[i % len(trials)]
        row = {**row, "trial_id": f"t{i:06d}"}
        start = time.perf_counter()
        store.record_trial(row, epochs, predictions)
        costs.append(time.perf_counter() - start)
    return costs, time.perf_counter() - t0


def at(costs: list[float], mark: int) -> float | None:
    """Median ms of the ``WINDOW`` records before the ``mark``-th."""
    return statistics.median(costs[mark - WINDOW:mark]) * 1e3 if len(costs) >= mark else None


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(read: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    read()
    return time.perf_counter() - t0


def readers(root: Path) -> dict[str, float | str]:
    """Seconds for each reader to read the compacted trials and predictions tables (duckdb:
    all of trials, and per-trial accuracy from predictions)."""
    import pandas as pd
    import polars as pl

    out: dict[str, float | str] = {
        "polars": timed(lambda: (pl.read_parquet(root / "trials.parquet"), pl.read_parquet(root / "predictions.parquet"))),
        "pandas": timed(lambda: (pd.read_parquet(root / "trials.parquet"), pd.read_parquet(root / "predictions.parquet"))),
    }
    try:
        import duckdb
    except ImportError:
        out["duckdb"] = "not installed (pip install duckdb)"
    else:
        trials = f"SELECT * FROM read_parquet('{root / 'trials.parquet'}')"
        accuracy = f"SELECT trial_id, avg((label = pred)::int) FROM read_parquet('{root / 'predictions.parquet'}') GROUP BY trial_id"
        out["duckdb"] = timed(lambda: (duckdb.sql(trials).fetchall(), duckdb.sql(accuracy).fetchall()))
    return out


def row_of(name: str, costs: list[float], total: float, root: Path) -> str:
    marks = "".join(f"{(f'{v:.1f}' if (v := at(costs, m)) is not None else '-'):>10}" for m in MARKS)
    first, last = statistics.median(costs[:WINDOW]), statistics.median(costs[-WINDOW:])
    return f"{name:<10}{len(costs):>9,}{marks}{max(costs) * 1e3:>10.0f}{total:>10.1f}{last / first:>8.1f}{disk_bytes(root) / 1e6:>9.1f}"


@contextlib.contextmanager
def moto_s3() -> Iterator[str]:
    """A moto S3 server on loopback, the environment pointed at it; yields a bucket URI."""
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update({"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}", "AWS_EC2_METADATA_DISABLED": "true"})
    boto3.client("s3").create_bucket(Bucket="bench")
    try:
        yield "s3://bench/exp"
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100_000)
    parser.add_argument("--baseline", type=int, default=2_000, help="trials for the whole-table baseline (quadratic)")
    parser.add_argument("--s3", type=int, default=0, help="trials to record on a moto S3 server too")
    parser.add_argument("--quick", action="store_true", help="2,000 trials, the baseline to 1,000, S3 at 300")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.baseline, args.s3 = 2_000, 1_000, args.s3 or 300
    work = Path(tempfile.mkdtemp(prefix="store-scale-"))
    try:
        header = f"{'store':<10}{'trials':>9}" + "".join(f"{f'ms@{m:,}':>10}" for m in MARKS)
        print(header + f"{'max ms':>10}{'total s':>10}{'last/1st':>8}{'MB':>9}")
        base_costs, base_total = record(RewriteStore(work / "rewrite"), args.baseline)
        print(row_of("rewrite", base_costs, base_total, work / "rewrite"), flush=True)
        store = ExperimentStore.create(work / "log", "search", "scale", {"name": "scale"})
        costs, total = record(store, args.trials)
        print(row_of("log", costs, total, work / "log"))
        same = statistics.median(costs[args.baseline - WINDOW:args.baseline]) / statistics.median(base_costs[-WINDOW:])
        print(f"\none record at {args.baseline:,} trials: log / rewrite = {same:.3f}")
        print(f"whole run: log {total / len(costs) * 1e3:.1f} ms a record on average over {len(costs):,} trials")
        files = len(list((work / "log" / "log").iterdir()))
        print(f"a reader during the search (ExperimentStore.trials(), {files} log files): {timed(store.trials):.2f} s")
        print(f"compaction at the end: {timed(store.compact):.1f} s, {disk_bytes(work / 'log') / 1e6:.1f} MB after")
        for reader, seconds in readers(work / "log").items():
            shown = f"{seconds:.2f} s" if isinstance(seconds, float) else seconds
            print(f"  {reader} reads trials + predictions ({args.trials * 240:,} rows): {shown}")
        if args.s3:
            with moto_s3() as uri:
                s3_costs, s3_total = record(ExperimentStore.create(uri, "search", "scale", {"name": "scale"}), args.s3)
            print(f"\nS3 (moto on loopback), {args.s3} trials: median {statistics.median(s3_costs) * 1e3:.1f} ms a record, "
                  f"first {statistics.median(s3_costs[:WINDOW]) * 1e3:.1f}, last {statistics.median(s3_costs[-WINDOW:]) * 1e3:.1f}, "
                  f"total {s3_total:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
