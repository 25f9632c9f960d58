"""Results stores for the dashboard tests, written through ExperimentStore.record_trial.

A search over fusion blocks and learning rate where ``tacfn`` at a learning rate near 3e-3
is planted best, and an ablation whose variants differ from the baseline by a planted
paired effect: ``modality_dropout`` +0.05, ``late_average`` -0.05, ``no_selection`` 0.
And a seed-aware search (SEED_AWARE): each configuration trained on three seeds, one row per
replicate, with a planted best, racing, a diverged replicate and a failed one.
Deterministic per seed. BASE sets heads, which the search samples only for blocks with
attention: a search trial's ``config.*`` holds heads 4 where its ``param.*`` holds null.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tacfn.store import (
    EXPERIMENT_FILE,
    SCHEMA_VERSION,
    ExperimentStore,
    flatten_config,
    param_columns,
)

FUSIONS = ("tacfn", "concat", "late_average", "late_product", "mult")
ATTENTION = ("tacfn", "mult")
RAVDESS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
IEMOCAP = ("neutral", "happy", "sad", "angry")
START = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
BASE = {
    "model": {
        "preset": "lite",
        "backbone": "frozen",
        "fusion": {"name": "tacfn", "heads": 4, "layers": 2, "selection": "transformer"},
        "modality_dropout": {"audio": 0.0, "video": 0.0},
    },
    "data": {"protocol": "6fold", "fold": 0},
    "train": {"epochs": 6, "batch_size": 16, "lr": 1e-3, "seed": 0},
}
SPACE = {
    "model.fusion.name": {"choice": list(FUSIONS)},
    "model.fusion.heads": {"choice": [1, 2, 4, 8]},
    "model.fusion.layers": {"int": [1, 3], "when": {"model.fusion.name": list(ATTENTION)}},
    "model.fusion.selection": {"choice": ["transformer", "mean", "none"], "when": {"model.fusion.name": ["tacfn"]}},
    "model.modality_dropout.audio": {"float": [0.0, 0.5]},
    "train.lr": {"float": [1e-4, 1e-2], "log": True},
    "train.batch_size": {"int": [8, 32], "step": 8},
}
ABLATION_EFFECTS = {"tacfn": 0.0, "no_selection": 0.0, "modality_dropout": 0.05, "late_average": -0.05}
ABLATION_SIZES = {  # variant -> (num_parameters, trainable_parameters): the encoders' 80,000 frozen
    "tacfn": (120_000, 40_000),
    "no_selection": (110_000, 30_000),
    "modality_dropout": (120_000, 40_000),
    "late_average": (90_000, 10_000),
}


def _config(overrides: dict[str, Any]) -> dict[str, Any]:
    """BASE with dotted-key overrides applied."""
    cfg = copy.deepcopy(BASE)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[last] = value
    return cfg


def _status(i: int, recorded: int, running: int) -> str:
    """The last ``running`` recorded trials run; trial 5 fails; every 7th is pruned."""
    if i >= recorded - running:
        return "running"
    if i == 5:
        return "failed"
    return "pruned" if i % 7 == 6 else "completed"


def _curve(final: float, epochs: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Learning curves rising to ``final`` (validation) with train a little above."""
    rows = []
    for e in range(1, epochs + 1):
        progress = 1 - math.exp(-e / 2) + math.exp(-epochs / 2)
        val = final * progress + float(rng.normal(0, 0.005))
        rows.append(
            {
                "epoch": e,
                "train_loss": 2.0 / e,
                "train_score": min(1.0, val + 0.08),
                "val_loss": 2.1 / e,
                "val_score": val,
                "val_weighted_f1": val - 0.02,
                "seconds": 5.0,
            }
        )
    return rows


def _predictions(score: float, rng: np.random.Generator, dataset: str, n: int = 48) -> list[dict[str, Any]]:
    """Test predictions right with probability ``score`` (RAVDESS: 8 classes; IEMOCAP: a binary task per emotion)."""
    rows = []
    tasks: Iterable[str | None] = IEMOCAP if dataset == "iemocap" else (None,)
    for task in tasks:
        classes = 2 if task else len(RAVDESS)
        for i in range(n):
            label = i % classes
            pred = label if rng.random() < score else (label + 1 + int(rng.integers(classes - 1))) % classes
            rows.append({"split": "test", "sample_id": f"clip{i:03d}", "task": task, "label": label, "pred": pred})
    return rows


def search_spec(trials: int, objectives: Iterable[str] = ()) -> dict[str, Any]:
    search = {
        "metric": "val_score",
        "trials": trials,
        "concurrency": 2,
        "scheduler": "asha",
        "seed": 0,
        "objectives": list(objectives),
    }
    return {"name": "quick", "base": BASE, "space": SPACE, "search": search}


def write_search_store(
    root: Path,
    *,
    trials: int = 30,
    recorded: int | None = None,
    running: int = 0,
    objectives: Iterable[str] = (),
    dataset: str = "ravdess",
    seed: int = 0,
    schema_version: int = SCHEMA_VERSION,
) -> Path:
    """A search of ``trials`` planned trials, ``recorded`` of them written (all by default),
    the last ``running`` of those still running; the best completed one chosen and tested
    once every planned trial is recorded and none runs. Each row's ``param.*`` columns hold
    what was sampled, except in an experiment of a ``schema_version`` from before them."""
    rng = np.random.default_rng(seed)
    store = ExperimentStore.create(root, "search", "quick", search_spec(trials, objectives))
    if schema_version != SCHEMA_VERSION:
        experiment = {**store.experiment, "schema_version": schema_version}
        (Path(root) / EXPERIMENT_FILE).write_text(json.dumps(experiment))
        store = ExperimentStore.open(root)
    recorded = trials if recorded is None else recorded
    best: tuple[float, dict[str, Any], list[dict[str, Any]]] | None = None
    for i in range(recorded):
        fusion = FUSIONS[i % len(FUSIONS)]
        overrides: dict[str, Any] = {
            "model.fusion.name": fusion,
            "model.modality_dropout.audio": round(float(rng.uniform(0, 0.5)), 3),
            "train.lr": float(10 ** rng.uniform(-4, -2)),
            "train.batch_size": int(rng.choice([8, 16, 24, 32])),
        }
        if fusion in ATTENTION:
            overrides["model.fusion.heads"] = int(rng.choice([1, 2, 4, 8]))
            overrides["model.fusion.layers"] = int(rng.integers(1, 4))
        if fusion == "tacfn":
            overrides["model.fusion.selection"] = str(rng.choice(["transformer", "mean", "none"]))
        cfg = _config(overrides)
        lr_penalty = 0.08 * abs(math.log10(overrides["train.lr"]) + 2.5)
        score = 0.45 + 0.15 * (fusion == "tacfn") + 0.05 * (fusion == "mult") - lr_penalty + float(rng.normal(0, 0.01))
        status = _status(i, recorded, running)
        epochs_run = {"completed": 6, "pruned": 2, "running": 3, "failed": 0}[status]
        epochs = _curve(score, 6, rng)[:epochs_run]
        started = START + timedelta(seconds=60 * (i // 2))
        row: dict[str, Any] = {
            "trial_id": f"trial_{i:04d}",
            "status": status,
            "seed": 0,
            "fold": 0,
            "config_hash": f"{i:04x}" * 4,
            **flatten_config(cfg),
            **(param_columns(overrides, SPACE) if store.records_params else {}),
            "epochs_run": epochs_run,
            "seconds": 5.0 * epochs_run,
            "started_at": started,
            "finished_at": None if status == "running" else started + timedelta(seconds=5 * epochs_run + 3),
            "num_parameters": 50_000 + 40_000 * FUSIONS.index(fusion) + 1_000 * i,
            "trainable_parameters": 40_000 + 40_000 * FUSIONS.index(fusion),
            "latency_ms": 2.0 + FUSIONS.index(fusion) + 0.1 * i,
            "node": f"10.0.0.{1 + i % 2}",
            "worker": f"10.0.0.{1 + i % 2}:{4100 + i % 2}",
            "dataset": dataset,
            "chosen": False,
            "error": "RuntimeError: CUDA out of memory" if status == "failed" else None,
        }
        if epochs and status != "failed":
            best_row = max(epochs, key=lambda e: e["val_score"])
            row |= {
                "val_score": best_row["val_score"],
                "val_weighted_f1": best_row["val_weighted_f1"],
                "best_epoch": best_row["epoch"],
            }
        if status == "failed":
            epochs = []
        store.record_trial(row, epochs)
        if status == "completed" and (best is None or row["val_score"] > best[0]):
            best = (row["val_score"], row, epochs)
    if best is not None and recorded == trials and not running:
        _choose(store, best[1], best[2], rng, dataset)
    store.compact()  # as a search leaves it (a running one's log reads alike)
    return Path(root)


def _choose(
    store: ExperimentStore, row: dict[str, Any], epochs: list[dict[str, Any]], rng: np.random.Generator, dataset: str
) -> None:
    """Record the search's chosen trial again with its test scores and predictions."""
    test = row["val_score"] - 0.03
    chosen = {**row, "chosen": True, "test_score": test, "test_weighted_f1": test - 0.02}
    modalities = ("text", "audio", "vision") if dataset == "iemocap" else ("audio", "video")
    chosen |= {f"test_missing_{m}": test - 0.1 - 0.05 * k for k, m in enumerate(modalities)}
    classes = 2 if dataset == "iemocap" else 8
    chosen["test_per_class_accuracy"] = [round(float(x), 3) for x in rng.uniform(0, 1, classes)]  # as the runner stores it
    if dataset == "iemocap":
        for k, emotion in enumerate(IEMOCAP):
            chosen |= {f"test_{emotion}_accuracy": 0.8 - 0.05 * k, f"test_{emotion}_weighted_f1": 0.75 - 0.05 * k}
    store.record_trial(chosen, epochs, _predictions(test, rng, dataset))


def write_ablation_store(
    root: Path,
    *,
    seeds: Iterable[int] = (0, 1, 2),
    folds: Iterable[int] = (0, 1),
    skip: Iterable[tuple[str, int, int]] = (),
    budgets: dict[str, int] | None = None,
    seed: int = 0,
    dataset: dict[str, Any] | None = None,
    latency: bool = True,
) -> Path:
    """An ablation with the planted ABLATION_EFFECTS, paired on (seed, fold).

    ``skip`` leaves (variant, seed, fold) runs out (an unpaired comparison); ``budgets``
    gives a variant another ``train.epochs`` (an unequal budget); ``dataset`` is the record
    experiment.json keeps of the data (planted effects and ceilings). Each variant has its
    parameter counts (ABLATION_SIZES) and each run a per-sample test latency, unless
    ``latency`` is false (a folder from before runs timed their test pass).
    """
    rng = np.random.default_rng(seed)
    seeds, folds, skip, budgets = list(seeds), list(folds), set(skip), budgets or {}
    variants = {
        "tacfn": {},
        "no_selection": {"model.fusion.selection": "none"},
        "modality_dropout": {"model.modality_dropout.audio": 0.3, "model.modality_dropout.video": 0.3},
        "late_average": {"model.fusion.name": "late_average"},
    }
    spec = {
        "name": "fusion_ablation",
        "baseline": "tacfn",
        "variants": variants,
        "seeds": seeds,
        "folds": folds,
        "base": BASE,
    }
    store = ExperimentStore.create(root, "ablation", "fusion_ablation", spec, dataset=dataset)
    pair_effect = {(s, f): float(rng.normal(0, 0.04)) for s in seeds for f in folds}
    n = 0
    for name, overrides in variants.items():
        epochs_planned = budgets.get(name, BASE["train"]["epochs"])
        for s in seeds:
            for f in folds:
                if (name, s, f) in skip:
                    continue
                cfg = _config({**overrides, "train.seed": s, "data.fold": f, "train.epochs": epochs_planned})
                test = 0.6 + pair_effect[(s, f)] + ABLATION_EFFECTS[name] + float(rng.normal(0, 0.005))
                epochs = _curve(test + 0.02, epochs_planned, rng)
                started = START + timedelta(seconds=40 * n)
                row = {
                    "trial_id": f"{name}_s{s}_f{f}",
                    "status": "completed",
                    "seed": s,
                    "fold": f,
                    "config_hash": name,
                    **flatten_config(cfg),
                    "variant": name,
                    "val_score": max(e["val_score"] for e in epochs),
                    "best_epoch": epochs_planned,
                    "epochs_run": epochs_planned,
                    "test_score": test,
                    "test_weighted_f1": test - 0.02,
                    "test_missing_audio": test - 0.12 + (0.08 if name == "modality_dropout" else 0.0),
                    "test_missing_video": test - 0.2 + (0.08 if name == "modality_dropout" else 0.0),
                    "seconds": 5.0 * epochs_planned,
                    "started_at": started,
                    "finished_at": started + timedelta(seconds=35),
                    "num_parameters": ABLATION_SIZES[name][0],
                    "trainable_parameters": ABLATION_SIZES[name][1],
                    **({"test_ms_per_sample": 0.2 + 0.1 * list(variants).index(name) + 0.01 * s + 0.001 * f} if latency else {}),
                    "node": "10.0.0.1",
                    "worker": f"10.0.0.1:{4100 + n % 2}",
                    "dataset": "ravdess",
                }
                store.record_trial(row, epochs, _predictions(test, rng, "ravdess", n=24))
                n += 1
    store.compact()
    return Path(root)


SEEDS = (0, 1, 2)
TACFN = {"model.fusion.name": "tacfn", "model.fusion.selection": "transformer"}
MULT = {"model.fusion.name": "mult"}


def _completed(*scores: float) -> list[tuple[str, float | None]]:
    return [("completed", score) for score in scores]


SEED_AWARE: list[tuple[dict[str, Any], list[tuple[str, float | None]], bool]] = [
    # in start order: (what was sampled, each replicate's (status, val_score), whether racing stopped it)
    # the mean of the first is near the second's, but its scores lie far apart: lcb ranks it below the sixth
    ({**MULT, "model.fusion.heads": 2, "model.fusion.layers": 2, "train.lr": 2e-3}, _completed(0.70, 0.50, 0.55), False),
    ({"model.fusion.name": "concat", "train.lr": 1e-3}, _completed(0.60, 0.58, 0.59), False),
    ({**TACFN, "model.fusion.heads": 4, "model.fusion.layers": 2, "train.lr": 3e-3}, _completed(0.66, 0.64, 0.65), False),  # best
    ({"model.fusion.name": "late_product", "train.lr": 5e-4}, _completed(0.40), True),  # raced out after 1
    # a diverged replicate counts 0, and racing stops the configuration after it
    ({**TACFN, "model.fusion.heads": 8, "model.fusion.layers": 3, "train.lr": 1e-2}, [("completed", 0.62), ("diverged", None)], True),
    ({"model.fusion.name": "late_average", "train.lr": 1e-3}, _completed(0.55, 0.56, 0.57), False),
    ({"model.fusion.name": "concat", "train.lr": 1e-4}, [("completed", 0.50), ("pruned", 0.28)], False),  # ASHA stopped one
    ({**MULT, "model.fusion.heads": 1, "model.fusion.layers": 1, "train.lr": 5e-3}, [("completed", 0.58), ("failed", None)], False),
]
SEED_AWARE_BEST = 2  # the index in SEED_AWARE of the planted best configuration
SEED_AWARE_TESTS = (0.61, 0.63, 0.62)  # the chosen configuration's test score on each replicate


def write_seed_aware_store(root: Path, *, aggregate: str = "mean", seed: int = 0) -> Path:
    """A finished seed-aware search (``search.seeds`` SEEDS) of the SEED_AWARE configurations,
    one row per replicate, its best configuration chosen and tested on every replicate."""
    rng = np.random.default_rng(seed)
    spec = search_spec(len(SEED_AWARE))
    spec["search"] |= {"seeds": list(SEEDS), "aggregate": aggregate, "objectives": []}
    store = ExperimentStore.create(root, "search", "seeds", spec)
    n, chosen = 0, []
    for c, (sampled, replicates, raced_out) in enumerate(SEED_AWARE):
        sampled = {"model.modality_dropout.audio": 0.05 * c, "train.batch_size": 8 * (1 + c % 4), **sampled}
        config_hash = hashlib.sha1(json.dumps(sampled, sort_keys=True).encode()).hexdigest()[:16]
        for replicate, (status, score) in enumerate(replicates):
            cfg = _config({**sampled, "train.seed": SEEDS[replicate]})
            epochs_run = {"completed": 6, "pruned": 2, "diverged": 3, "failed": 0}[status]
            epochs = _curve(score or 0.3, 6, rng)[:epochs_run] if status not in ("failed", "diverged") else []
            started = START + timedelta(seconds=60 * n)
            row: dict[str, Any] = {
                "trial_id": f"trial_{n:04d}",
                "status": status,
                "seed": SEEDS[replicate],
                "fold": 0,
                "replicate": replicate,
                "config_hash": config_hash,
                **flatten_config(cfg),
                **param_columns(sampled, SPACE),
                "val_score": score,
                "best_epoch": epochs_run if score is not None else None,
                "epochs_run": epochs_run,
                "seconds": 5.0 * epochs_run,
                "started_at": started,
                "finished_at": started + timedelta(seconds=5 * epochs_run + 3),
                "num_parameters": 50_000 + 40_000 * FUSIONS.index(sampled["model.fusion.name"]),
                "raced_out": raced_out and replicate == len(replicates) - 1,
                "chosen": False,
                "error": {"failed": "RuntimeError: CUDA out of memory", "diverged": "loss is nan"}.get(status),
            }
            store.record_trial(row, epochs)
            if c == SEED_AWARE_BEST:
                chosen.append((row, epochs))
            n += 1
    for (row, epochs), test in zip(chosen, SEED_AWARE_TESTS):
        tested = {**row, "chosen": True, "test_score": test, "test_weighted_f1": test - 0.02}
        tested |= {"test_missing_audio": test - 0.1, "test_missing_video": test - 0.15}
        store.record_trial(tested, epochs, _predictions(test, rng, "ravdess"))
    store.compact()
    return Path(root)
