"""Which table format keeps recording a trial cheap as an experiment grows.

Today ``ExperimentStore.record_trial`` reads, filters and rewrites all of trials.parquet,
epochs.parquet and predictions.parquet for every record, so a record costs O(trials) and a
search O(trials^2). This records the same synthetic search, one trial at a time, into four
candidates and measures what the choice of format rests on:

* ``baseline``: today's way (read the table whole, drop the trial's rows, concat, write);
* ``parts``: one small Parquet file per table per record; readers keep each trial's latest
  ``_record`` (the trials table's, so an epochs/predictions part without its trials row is ignored);
* ``delta``: Delta Lake via ``deltalake``, an append commit per table per record; a re-record
  rotates over MERGE, ``mode="overwrite", predicate=...`` (replaceWhere) and delete + append;
* ``iceberg``: Apache Iceberg via ``pyiceberg`` with a SQLite SqlCatalog, an append per table per
  record (old metadata.json files deleted, manifests merged); a re-record rotates over
  ``overwrite(overwrite_filter=...)`` and delete + append.

Every writer loads the table's state per record, as tacfn's stateless store does. A search
trial is a 60-column trials row (strings, floats, ints, bools, timestamps, nulls), 50 epochs of
8 columns and 240 predictions; 1 trial in 20 is recorded twice ("running" with 5 epochs and no
predictions, then "completed" 5 trials later), which must replace the earlier rows. Measured:
the cost of one record at record 100, 1,000 and the last (median of 20 around it), total time,
files and bytes on disk, compaction, the time each reader (pyarrow, polars, pandas, duckdb)
takes to read the trials and predictions tables resolved (and whether it got the right rows),
and what each reader sees when it reads a table's folder naively as Parquet files. The baseline
runs to the end; a candidate stops once its recording has taken ``--budget`` seconds (the
"records" column says where). Ratios are against the baseline, run in the same process.
duckdb reads Delta and Iceberg through their Arrow datasets when its extensions cannot be
downloaded (offline).

    pip install -e '.[bench-formats]'   # deltalake, duckdb, pyiceberg[sql-sqlite]
    python benchmarks/store_formats.py [--records 2000] [--quick] [--budget 150]   # --quick: 300 trials
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo

os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")  # polars' faster planner needs polars_iceberg, not installed
TABLES = ("epochs", "predictions", "trials")  # written in this order: the trials row last
KEYS = {"trials": ["trial_id"], "epochs": ["trial_id", "epoch"], "predictions": ["trial_id", "split", "sample_id"]}
TS = pa.timestamp("us", tz="UTC")
_CYCLE = [pa.string(), pa.int64(), pa.float64(), pa.bool_()]
SCHEMAS = {
    "trials": pa.schema(
        [("trial_id", pa.string()), ("status", pa.string()), ("seed", pa.int64()), ("fold", pa.int64()),
         ("config_hash", pa.string()), *[(c, pa.float64()) for c in ("val_score", "val_weighted_f1")],
         *[(c, pa.int64()) for c in ("best_epoch", "epochs_run")],
         *[(c, pa.float64()) for c in ("test_score", "test_weighted_f1", "seconds")], ("started_at", TS), ("finished_at", TS),
         *[(c, pa.int64()) for c in ("num_parameters", "trainable_parameters")], ("node", pa.string()), ("error", pa.string()),
         *[(f"config.c{k:02d}", _CYCLE[k % 4]) for k in range(20)], *[(f"param.p{k}", _CYCLE[k % 3]) for k in range(6)],
         *[(f"test.class{k:02d}_f1", pa.float64()) for k in range(15)], ("_record", pa.int64())]
    ),
    "epochs": pa.schema([("trial_id", pa.string()), ("epoch", pa.int64()),
                         *[(c, pa.float64()) for c in ("train_loss", "train_score", "val_loss", "val_score", "val_weighted_f1", "seconds")],
                         ("_record", pa.int64())]),
    "predictions": pa.schema([("trial_id", pa.string()), ("split", pa.string()), ("sample_id", pa.string()), ("task", pa.string()),
                              ("label", pa.int64()), ("pred", pa.int64()), ("_record", pa.int64())]),
}
READERS = ("pyarrow", "polars", "pandas", "duckdb")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass
class Record:
    trial_id: str
    seq: int  # the _record column: this record's position in the search
    replaces: bool
    tables: dict[str, pa.Table]


def make_record(rng: np.random.Generator, i: int, seq: int, running: bool, replaces: bool) -> Record:
    tid, n_epochs = f"t{i:05d}", 5 if running else 50
    row: dict[str, Any] = {"trial_id": tid, "status": "running" if running else "completed", "seed": i % 3, "fold": i % 5,
                           "config_hash": f"{rng.integers(1 << 60):016x}", "best_epoch": int(rng.integers(n_epochs)),
                           "epochs_run": n_epochs, "started_at": T0 + timedelta(minutes=i),
                           "finished_at": None if running else T0 + timedelta(minutes=i + 30), "num_parameters": int(rng.integers(1e6)),
                           "node": f"node-{i % 4}", "error": None, "_record": seq}
    for field in SCHEMAS["trials"]:
        if field.name not in row:
            kind = _CYCLE.index(field.type) if field.type in _CYCLE else 2
            value = [f"v{rng.integers(5)}", int(rng.integers(100)), float(rng.random()), bool(rng.integers(2))][kind]
            row[field.name] = None if (running and field.name.startswith("test")) or (kind == 1 and i % 3 == 0) else value
    epochs = {"trial_id": [tid] * n_epochs, "epoch": np.arange(n_epochs), "_record": [seq] * n_epochs}
    epochs |= {f.name: rng.random(n_epochs) for f in SCHEMAS["epochs"] if f.name not in epochs}
    n_pred = 0 if running else 240
    preds = {"trial_id": [tid] * n_pred, "split": ["val", "test"] * (n_pred // 2), "sample_id": [f"s{j:03d}" for j in range(n_pred)],
             "task": [None] * n_pred, "label": rng.integers(6, size=n_pred), "pred": rng.integers(6, size=n_pred), "_record": [seq] * n_pred}
    tables = {"trials": pa.Table.from_pylist([row], SCHEMAS["trials"]), "epochs": pa.table(epochs, SCHEMAS["epochs"]),
              "predictions": pa.table(preds, SCHEMAS["predictions"])}
    return Record(tid, seq, replaces, tables)


def schedule(n: int, seed: int = 0) -> list[Record]:
    """n trials; trial i with i % 20 == 7 is recorded "running", then "completed" 5 trials later."""
    rng, records, due = np.random.default_rng(seed), [], []
    for i in range(n):
        records.append(make_record(rng, i, len(records), running=i % 20 == 7, replaces=False))
        if i % 20 == 7:
            due.append((i + 5, i))
        while due and (due[0][0] <= i or i == n - 1):
            records.append(make_record(rng, due.pop(0)[1], len(records), running=False, replaces=True))
    return records


class Baseline:
    def __init__(self, root: Path) -> None:
        self.root, self.rerecords = root, 0

    def record(self, rec: Record) -> str:
        for name in TABLES:
            path = self.root / f"{name}.parquet"
            old = pq.read_table(path) if path.exists() else SCHEMAS[name].empty_table()
            kept = old.filter(pc.invert(pc.equal(old["trial_id"], rec.trial_id)))
            pq.write_table(pa.concat_tables([kept, rec.tables[name]]).combine_chunks(), path)
        return "rewrite"

    def folder(self, name: str) -> str:
        return str(self.root / f"{name}.parquet")

    def read(self, reader: str, name: str) -> Any:
        path = self.folder(name)
        return {"pyarrow": lambda: pq.read_table(path), "polars": lambda: pl.read_parquet(path), "pandas": lambda: pd.read_parquet(path),
                "duckdb": lambda: duckdb.sql(f"SELECT * FROM read_parquet('{path}')").to_arrow_table()}[reader]()

    def compact(self) -> None:
        """One file per table already."""


class Parts(Baseline):
    def record(self, rec: Record) -> str:
        for name in TABLES:
            if rec.tables[name].num_rows:
                (self.root / name).mkdir(exist_ok=True)
                pq.write_table(rec.tables[name], self.root / name / f"{rec.seq:08d}.parquet")
        return "append"

    def folder(self, name: str) -> str:
        return str(self.root / name)

    def read(self, reader: str, name: str) -> Any:
        """``name``'s rows of each trial's latest record, as the trials table names it."""
        t, x = f"{self.root}/trials/*.parquet", f"{self.root}/{name}/*.parquet"
        if reader == "duckdb":
            latest = f"SELECT trial_id, max(_record) AS _record FROM read_parquet('{t}') GROUP BY trial_id"
            return duckdb.sql(f"SELECT * FROM read_parquet('{x}') SEMI JOIN ({latest}) USING (trial_id, _record)").to_arrow_table()
        if reader == "polars":
            latest = pl.scan_parquet(t).group_by("trial_id").agg(pl.col("_record").max())
            return pl.scan_parquet(x).join(latest, on=["trial_id", "_record"], how="semi").collect()
        if reader == "pandas":
            latest = pd.read_parquet(self.root / "trials", columns=["trial_id", "_record"]).groupby("trial_id", as_index=False).max()
            return pd.read_parquet(self.root / name).merge(latest, on=["trial_id", "_record"])
        trials = ds.dataset(self.root / "trials").to_table(columns=["trial_id", "_record"])
        latest = trials.group_by("trial_id").aggregate([("_record", "max")]).rename_columns(["trial_id", "_record"])
        return ds.dataset(self.root / name).to_table().join(latest, ["trial_id", "_record"], join_type="left semi")

    def compact(self) -> None:
        """One file per table holding the resolved rows; the parts it replaces are then removed."""
        resolved = {name: self.read("pyarrow", name) for name in TABLES}
        for name, table in resolved.items():
            parts = list((self.root / name).glob("*.parquet"))
            pq.write_table(table, self.root / name / "compacted.tmp")
            for part in parts:
                part.unlink()
            (self.root / name / "compacted.tmp").rename(self.root / name / "compacted.parquet")


class Delta(Parts):
    METHODS = ("merge", "replace-where", "delete+append")

    def record(self, rec: Record) -> str:
        method = self.METHODS[self.rerecords % 3] if rec.replaces else "append"
        self.rerecords += rec.replaces
        for name in TABLES:
            path, table = str(self.root / name), rec.tables[name]
            if method == "merge":
                on = " AND ".join(f"t.{k} = s.{k}" for k in KEYS[name])
                (DeltaTable(path).merge(table, on, source_alias="s", target_alias="t").when_matched_update_all()
                 .when_not_matched_insert_all().when_not_matched_by_source_delete(f"t.trial_id = '{rec.trial_id}'").execute())
            elif method == "replace-where":
                write_deltalake(path, table, mode="overwrite", predicate=f"trial_id = '{rec.trial_id}'")
            else:
                if method == "delete+append":
                    DeltaTable(path).delete(f"trial_id = '{rec.trial_id}'")
                if table.num_rows:
                    write_deltalake(path, table, mode="append")
        return method

    def read(self, reader: str, name: str) -> Any:
        path = self.folder(name)
        if reader == "duckdb":
            return duckdb.from_arrow(DeltaTable(path).to_pyarrow_dataset()).to_arrow_table()
        return {"pyarrow": lambda: DeltaTable(path).to_pyarrow_table(), "polars": lambda: pl.read_delta(path),
                "pandas": lambda: DeltaTable(path).to_pandas()}[reader]()

    def compact(self) -> None:
        for name in TABLES:
            table = DeltaTable(self.folder(name))
            table.optimize.compact()
            table.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            table.create_checkpoint()


class Iceberg(Baseline):
    METHODS = ("overwrite-filter", "delete+append")
    PROPERTIES = {"write.metadata.delete-after-commit.enabled": "true", "write.metadata.previous-versions-max": "10",
                  "commit.manifest-merge.enabled": "true"}

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.catalog = SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}")
        self.catalog.create_namespace("exp")
        for name in TABLES:
            self.catalog.create_table(f"exp.{name}", SCHEMAS[name], properties=self.PROPERTIES)

    def record(self, rec: Record) -> str:
        method = self.METHODS[self.rerecords % 2] if rec.replaces else "append"
        self.rerecords += rec.replaces
        for name in TABLES:
            table, rows = self.catalog.load_table(f"exp.{name}"), rec.tables[name]
            if method == "overwrite-filter":
                table.overwrite(rows, overwrite_filter=EqualTo("trial_id", rec.trial_id))
                continue
            if method == "delete+append":
                table.delete(EqualTo("trial_id", rec.trial_id))
            if rows.num_rows:
                table.append(rows)
        return method

    def folder(self, name: str) -> str:
        return str(self.root / "exp" / name)

    def read(self, reader: str, name: str) -> Any:
        scan = self.catalog.load_table(f"exp.{name}").scan()
        if reader == "duckdb":
            return duckdb.from_arrow(scan.to_arrow()).to_arrow_table()
        return {"pyarrow": scan.to_arrow, "pandas": scan.to_pandas,
                "polars": lambda: pl.scan_iceberg(self.catalog.load_table(f"exp.{name}")).collect()}[reader]()

    def compact(self) -> None:
        """pyiceberg 0.12 has no rewrite_data_files or orphan-file removal: overwrite with one file, expire snapshots."""
        for name in TABLES:
            table = self.catalog.load_table(f"exp.{name}")
            table.overwrite(table.scan().to_arrow())
            table.maintenance.expire_snapshots().older_than(datetime.now(timezone.utc)).commit()


def naive(reader: str, folder: str) -> str:
    """How many trials rows and distinct trial ids a reader sees in a table's folder read as Parquet."""
    glob = folder if folder.endswith(".parquet") else f"{folder}/**/*.parquet"
    try:
        ids = {"pyarrow": lambda: ds.dataset(folder).to_table(columns=["trial_id"])["trial_id"].to_pylist(),
               "pandas": lambda: pd.read_parquet(folder, columns=["trial_id"])["trial_id"].tolist(),
               "polars": lambda: pl.read_parquet(glob, columns=["trial_id"])["trial_id"].to_list(),
               "duckdb": lambda: [r[0] for r in duckdb.sql(f"SELECT trial_id FROM read_parquet('{glob}')").fetchall()]}[reader]()
    except Exception as exc:  # what the reader says is the result
        return f"error: {type(exc).__name__}"
    return f"{len(ids)}/{len(set(ids))}"


def disk(root: Path) -> tuple[int, float]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def measure(kind: type[Baseline], root: Path, records: list[Record], budget: float) -> dict[str, Any]:
    """Record until done or, for a candidate, until its recording time passes ``budget`` seconds; then read and compact."""
    store, costs, by_method, latest = kind(root), [], {}, {}
    for rec in records:
        seconds, method = timed(lambda rec=rec: store.record(rec))
        costs.append(seconds * 1e3)
        by_method.setdefault(method, []).append(seconds * 1e3)
        latest[rec.trial_id] = {name: table.num_rows for name, table in rec.tables.items()}
        if kind is not Baseline and sum(costs) > budget * 1e3:
            break
    n, want = len(latest), {name: sum(rows[name] for rows in latest.values()) for name in TABLES}
    out: dict[str, Any] = {"costs": costs, "trials": n, "disk": disk(root),
                           "methods": {m: statistics.median(v) for m, v in by_method.items()},
                           "epochs ok": len(store.read("pyarrow", "epochs")) == want["epochs"]}
    for point in (100, 1000, len(records)):
        lo = min(max(point - 10, 0), len(costs) - 20)
        out[f"@{point}"] = statistics.median(costs[lo:lo + 20]) if point <= len(costs) else float("nan")
    for phase in ("before", "after"):
        if phase == "after":
            out["compact"] = timed(store.compact)[0]
            out["disk_after"] = disk(root)
        for reader in READERS:
            seconds, (trials, preds) = timed(lambda r=reader: (store.read(r, "trials"), store.read(r, "predictions")))
            ids = trials["trial_id"].to_pylist() if isinstance(trials, pa.Table) else list(trials["trial_id"])
            ok = len(trials) == n == len(set(ids)) and len(preds) == want["predictions"]
            out[f"read {reader} {phase}"], out[f"wrong {reader} {phase}"] = seconds, "" if ok else f" WRONG {len(trials)}/{len(preds)}"
            out[f"naive {reader} {phase}"] = naive(reader, store.folder("trials"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="trials to record (1 in 20 twice); default 2000")
    parser.add_argument("--quick", action="store_true", help="300 trials")
    parser.add_argument("--budget", type=float, default=150, help="seconds of recording after which a candidate stops")
    args = parser.parse_args()
    n = 300 if args.quick else args.records
    records = schedule(n)
    try:
        duckdb.sql("LOAD delta")
        delta_ext = "loaded"
    except duckdb.Error as exc:
        delta_ext = f"cannot load ({str(exc).splitlines()[0][:60]}...): duckdb reads Delta through DeltaTable.to_pyarrow_dataset()"
    print(f"{n} trials, {len(records)} records ({len(records) - n} re-records); duckdb's delta extension {delta_ext}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tacfn-formats-") as tmp:
        for kind in (Baseline, Parts, Delta, Iceberg):
            root = Path(tmp) / kind.__name__.lower()
            root.mkdir()
            results[root.name] = measure(kind, root, records, args.budget)
            print(f"  {root.name}: {len(results[root.name]['costs'])} records in {sum(results[root.name]['costs']) / 1e3:.1f}s", flush=True)
            shutil.rmtree(root)
    base, points = results["baseline"], ["@100", "@1000", f"@{len(records)}"]

    def ratio(value: float, baseline: float, unit: str) -> str:
        return "n/a" if value != value else f"{value:.2f}{unit} ({value / baseline:.2f}x)"

    def write(r: dict[str, Any]) -> list[str]:
        done, total = len(r["costs"]), sum(r["costs"]) / 1e3
        return [str(done), *(ratio(r[p], base[p], "ms") for p in points), ratio(total, sum(base["costs"][:done]) / 1e3, "s"),
                str(r["disk"][0]), f"{r['disk'][1]:.1f}", str(r["epochs ok"])]

    show("Cost of one record in ms (median of the 20 around record @k), total recording time; x: ratio to the baseline at the same record",
         ["records", *points, "total", "files", "MB", "epochs ok"], {name: write(r) for name, r in results.items()})
    print("re-record, median by method: " + "; ".join(f"{name} " + ", ".join(f"{m} {v:.0f}ms" for m, v in r["methods"].items() if m != "append")
                                                     for name, r in results.items() if name != "parts"))
    show("Compaction at the end", ["seconds", "files", "MB"],
         {name: [f"{r['compact']:.2f}", str(r["disk_after"][0]), f"{r['disk_after'][1]:.1f}"] for name, r in results.items()})
    for phase in ("before", "after"):
        show(f"Read trials + predictions resolved (latest record per trial), {phase} compaction; x: ratio to the baseline's same reader",
             ["trials", *READERS], {name: [str(r["trials"])] + [ratio(r[f"read {x} {phase}"], base[f"read {x} {phase}"], "s")
                                                                + r[f"wrong {x} {phase}"] for x in READERS] for name, r in results.items()})
    for phase in ("before", "after"):
        show(f"Naive read of the trials table's folder as Parquet files, {phase} compaction: rows/distinct trial ids",
             ["trials", *READERS], {name: [str(r["trials"])] + [r[f"naive {x} {phase}"] for x in READERS] for name, r in results.items()})


def show(title: str, columns: list[str], rows: dict[str, list[str]]) -> None:
    width = [max(len(c), *(len(cells[i]) for cells in rows.values())) + 2 for i, c in enumerate(columns)]
    print(f"\n{title}\n{'':10}" + "".join(c.rjust(w) for c, w in zip(columns, width)))
    for name, cells in rows.items():
        print(f"{name:10}" + "".join(c.rjust(w) for c, w in zip(cells, width)))

if __name__ == "__main__":
    main()
