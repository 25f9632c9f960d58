"""Choosing a search's result: the best completed trial on validation, scored on the test
split once (:func:`choose_and_test`), with the Pareto front marked for multi-objective searches;
in a seed-aware search the configuration with the best aggregate, scored on the test split
on every replicate (:func:`choose_configuration`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune

from ..config import parse_run_config
from ..tasks import TaskData, load_task
from ..run_folder import LAST_CHECKPOINT
from ..training import score_checkpoint
from ._distributed import checkpoint_dir
from ..replicates import interval95
from ._racing import Race
from ._recording import prediction_rows
from ..store import ExperimentStore
from ..trackers._content import scores_on_test
from ._trainable import encoder_identity, trial_run_config


@dataclass
class SearchSummary:
    """What a finished search found."""

    path: Path | str
    trials: int
    completed: int
    best_trial: str | None
    best_params: dict[str, Any]
    val_score: float | None
    test_score: float | None
    metric: str = "val_score"  # what chose the best trial (search.metric)
    val_metric: float | None = None  # the best trial's validation value of ``metric``
    scored_now: bool = False  # this call scored the chosen trial (a resume may keep an earlier score)
    # A seed-aware search: val_score is the chosen configuration's aggregate, test_score the
    # mean over its replicates, test_interval that mean's 95% interval, over `replicates` of them.
    aggregate: str | None = None
    replicates: int = 1
    test_interval: tuple[float, float] | None = None


def choose_and_test(
    store: ExperimentStore, grid, base: dict, tasks: Mapping[str, TaskData], gpu: float, seconds: float, quiet: bool
) -> SearchSummary:
    """Pick the best completed trial on validation and score it on the test split, once.

    Ties go to the trial that started first, so every resume picks the same one. A resumed
    search whose pick is already scored keeps that score; one that found a better trial
    un-chooses the earlier pick and drops its test metrics and predictions: only the
    chosen configuration carries a test score.

    A CPU trial's choice is scored here, in the driver, which holds the data already: a
    Ray task would start a process and import torch first, seconds on a small machine. A
    GPU trial's is scored by a Ray task holding a GPU (at most one) as the trial did.
    """
    trials = store.trials().to_pylist()
    metric = store.experiment["spec"]["search"].get("metric", "val_score")
    completed = [t for t in trials if t["status"] == "completed" and t[metric] is not None]
    if not completed:
        return SearchSummary(store.root, len(trials), 0, None, {}, None, None, metric)
    objectives = store.experiment["spec"]["search"].get("objectives") or []
    if objectives:
        _mark_pareto(store, completed, objectives)
        trials = store.trials().to_pylist()
        completed = [t for t in trials if t["status"] == "completed" and t[metric] is not None]
    best = min(completed, key=lambda trial: _rank(trial, metric))
    result = next(r for r in grid if r.metrics and r.metrics.get("trial_id") == best["trial_id"])
    params = result.config
    for earlier in trials:
        if earlier.get("chosen") and earlier["trial_id"] != best["trial_id"]:
            _unchoose(store, earlier)
    scored_now = not (best.get("chosen") and best.get("test_score") is not None)
    test_score = _score_chosen(store, best, result, base, tasks, gpu) if scored_now else best["test_score"]
    if not quiet:
        print(f"search finished in {seconds:.0f} s ({_sampler(store)}): {len(completed)} of {len(trials)} trials completed")
    return SearchSummary(
        store.root, len(trials), len(completed), best["trial_id"], params, best["val_score"], test_score, metric, best[metric],
        scored_now,
    )


def choose_configuration(
    store: ExperimentStore, grid, race: Race, base: dict, tasks: Mapping[str, TaskData], gpu: float, seconds: float, quiet: bool
) -> SearchSummary:
    """Pick the configuration with the best aggregate among those with every replicate in, and
    score each of its completed replicates on the test split, once each.

    Every replicate row of the pick is marked chosen and carries its own test score; the
    summary gives their mean and 95% interval. A tie goes to the configuration whose first
    replicate started first. A resumed search keeps scores already taken and un-chooses an
    earlier pick it no longer ranks first, as :func:`choose_and_test` does.
    """
    rows = store.trials().to_pylist()
    confs = race.configurations(rows)
    complete = [conf for conf in confs.values() if race.is_complete(conf)]
    if not complete:
        return SearchSummary(store.root, len(confs), 0, None, {}, None, None, race.metric, aggregate=race.how)
    best = min(complete, key=lambda conf: (-race.value(conf), *_rank(conf.replicates[min(conf.replicates)], race.metric)[1:]))
    for earlier in rows:
        if earlier.get("chosen") and earlier["config_hash"] != best.config_hash:
            _unchoose(store, earlier)
    results = {r.metrics.get("trial_id"): r for r in grid if r.metrics}
    test_scores, scored_now = [], False
    for _, row in sorted(best.replicates.items()):
        if row["status"] != "completed":  # diverged: counted as a failure on validation, no weights worth testing
            continue
        if row.get("chosen") and row.get("test_score") is not None:
            test_scores.append(row["test_score"])
            continue
        test_scores.append(_score_chosen(store, row, results[row["trial_id"]], base, tasks, gpu))
        scored_now = True
    first = best.replicates[min(best.replicates)]
    params = {k: v for k, v in results[first["trial_id"]].config.items() if k not in ("train.seed", "data.fold")}
    value = race.value(best)
    mean = sum(test_scores) / len(test_scores)
    if not quiet:
        print(f"search finished in {seconds:.0f} s ({_sampler(store)}): {len(complete)} of {len(confs)} configurations "
              f"ran every replicate ({len(race.plan)} each)")
    return SearchSummary(
        store.root, len(confs), len(complete), first["trial_id"], params, value, mean, race.metric, value, scored_now,
        aggregate=race.how, replicates=len(test_scores), test_interval=interval95(test_scores),
    )


def _sampler(store: ExperimentStore) -> str:
    search = store.experiment["spec"]["search"]
    return f"{search.get('sampler', 'tpe')} sampler, seed {search.get('seed', 0)}"  # folders from before samplers: tpe


def _rank(trial: dict[str, Any], metric: str) -> tuple:
    """Sorts the best validation value of the search's ``metric`` first and, on a tie, the
    trial that started first (a row without a start time last), then the lower id: the same
    pick on every resume, whatever the order of the store's rows."""
    return -trial[metric], trial["started_at"] is None, trial["started_at"], trial["trial_id"]


def _score_chosen(store: ExperimentStore, best: dict, result, base: dict, tasks: Mapping[str, TaskData], gpu: float) -> float:
    """Score the trial ``best`` on the test split from its saved weights and record it as chosen."""
    cfg = trial_run_config(base, result.config, check_model=False)
    checkpoint = result.checkpoint
    if checkpoint is None:  # DDP trials: Train's own, in the folder the trial reported
        folder = checkpoint_dir(result.metrics)
        assert folder is not None, f"trial {best['trial_id']} reported no checkpoint"
        checkpoint = tune.Checkpoint(folder)
    shared = tasks.get(encoder_identity(cfg))
    with checkpoint.as_directory() as path:
        weights = Path(path) / LAST_CHECKPOINT
        if gpu:
            remote = _score_remote.options(num_gpus=min(gpu, 1)).remote(cfg.model_dump(mode="json"), shared, str(weights))
            scored = ray.get(remote)
        else:
            scored = score_checkpoint(cfg, shared or load_task(cfg), weights)
    test = scored.metrics
    scores = {"chosen": True, **scores_on_test(test, scored.missing, scored.ms_per_sample)}
    # Predictions before the row, as a trial is recorded: a reader that sees it chosen finds them.
    store.record_predictions(best["trial_id"], prediction_rows(scored.predictions))
    store.update_trials({best["trial_id"]: scores})
    return test["score"]


def _unchoose(store: ExperimentStore, trial: dict[str, Any]) -> None:
    """Record an earlier pick as not chosen, without its test metrics and predictions."""
    cleared = {k: None for k in trial if k.startswith("test_")}
    store.update_trials({trial["trial_id"]: {**cleared, "chosen": False}})
    store.record_predictions(trial["trial_id"], [])


def _mark_pareto(store: ExperimentStore, completed: list[dict[str, Any]], objectives: list[str]) -> None:
    """Record which completed trials are Pareto-optimal: no other trial scores at least as
    well on validation and costs no more on every objective, and strictly better on one.
    One write of ``trials.parquet``; epochs and predictions are left as they are."""

    def key(t: dict[str, Any]) -> tuple[float, ...]:
        return (-t["val_score"], *(t[o] for o in objectives))

    front = {}
    for trial in completed:
        mine = key(trial)
        dominated = any(
            all(a <= b for a, b in zip(key(o), mine)) and key(o) != mine for o in completed if o is not trial
        )
        front[trial["trial_id"]] = {"pareto": not dominated}
    store.update_trials(front)


@ray.remote
def _score_remote(cfg_map: dict, task: TaskData | None, checkpoint: str):
    cfg = parse_run_config(cfg_map, "chosen config", check_model=False)
    task = task if task is not None else load_task(cfg)
    return score_checkpoint(cfg, task, Path(checkpoint))
