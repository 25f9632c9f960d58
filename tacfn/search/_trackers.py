"""A search's or an ablation's trackers: Ray Tune's logger callbacks, given tacfn's content.

MLflow and W&B log through Ray Tune's own integrations (``MLflowLoggerCallback``, which logs
from this driver, and ``WandbLoggerCallback``, which starts one logging actor per trial, as
W&B wants one process per run); TensorBoard through a logger callback writing the event files
with tensorboardX, as Tune's own does, one folder per trial. Each gets what
:mod:`tacfn.trackers` says a run logs: the trial's config and tags when it starts, each
epoch once (a trial restored from a checkpoint reports some again), step = epoch, and its
end metrics when it ends. Ray's callbacks add ``training_iteration`` (= epoch, Tune's step).

A search's test score is not among a trial's end metrics: the driver scores the chosen
trial after every trial has ended (:mod:`._choosing`), and :func:`log_chosen` then writes it
to each tracker as one more run, ``chosen-TRIAL ID``, tagged ``chosen=true``.

Importing this module imports Ray's MLflow and W&B integrations (a second or so, and each
library where it is installed): the runners import it only for a search or plan with loggers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger import LoggerCallback

from ..trackers._content import RunInfo, end_metrics, epoch_metrics, run_info
from ..trackers._schema import MLflowTracker, Tracker, WandbTracker
from ..trackers._writers import TensorBoardRun, TrackerRun, log_finished_run, wandb_tags
from ._recording import trial_epochs
from ._trainable import trial_run_config

Describe = Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]
"""A trial's Tune config -> (its dotted run-config params, extra columns such as ``variant``)."""


class _Trials:
    """What one tracker callback has logged of each trial, and what it logs next."""

    def __init__(self, base: dict[str, Any], experiment: str, describe: Describe | None) -> None:
        self.base = base
        self.experiment = experiment
        self.describe = describe or (lambda config: (dict(config), {}))
        self.logged: dict[str, int] = {}  # trial id -> its last epoch logged
        self.seen: dict[str, list[dict[str, Any]]] = {}

    def info(self, trial) -> RunInfo:
        """A search's trial is named by its id and grouped by the experiment; an ablation's run
        by its variant, seed and fold, and grouped by its variant."""
        params, extra = self.describe(trial.config)
        cfg = trial_run_config(self.base, params, check_model=False)
        variant = extra.get("variant")
        if variant is None:
            return run_info(cfg, trial.trial_id, trial_id=trial.trial_id, group=self.experiment)
        name = f"{variant}-seed{cfg.train.seed}-fold{cfg.data.fold}"
        return run_info(cfg, name, trial_id=trial.trial_id, variant=variant, group=variant)

    def epoch(self, trial, result: dict[str, Any]) -> tuple[int, dict[str, float]] | None:
        """The epoch ``result`` reports and its metrics, unless this epoch was logged already."""
        epoch = int(result.get("epoch", 0))
        if epoch <= self.logged.get(trial.trial_id, 0):
            return None
        self.logged[trial.trial_id] = epoch
        metrics = epoch_metrics(result)
        self.seen.setdefault(trial.trial_id, []).append({"epoch": epoch, **metrics})
        return epoch, metrics

    def end(self, trial) -> tuple[int, dict[str, float]]:
        """The step of the trial's last epoch and its end metrics (an ablation's run carries its
        test metrics in its last report's ``summary``)."""
        result = trial.last_result or {}
        epochs = trial_epochs(result, self.seen.pop(trial.trial_id, []))
        return (epochs[-1]["epoch"] if epochs else 0), end_metrics(epochs, result.get("summary"))


class _Shaped(LoggerCallback):
    """Hands a Ray logger callback tacfn's metrics in place of Tune's raw results."""

    def __init__(self, trials: _Trials, *args: Any, **kwargs: Any) -> None:
        self.trials = trials
        super().__init__(*args, **kwargs)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        epoch = self.trials.epoch(trial, result)
        if epoch is not None:
            step, metrics = epoch
            super().log_trial_result(iteration, trial, {**metrics, TRAINING_ITERATION: step})

    def log_trial_end(self, trial, failed: bool = False) -> None:
        step, metrics = self.trials.end(trial)
        super().log_trial_result(step, trial, {**metrics, TRAINING_ITERATION: step})
        diverged = (trial.last_result or {}).get("status") == "diverged"  # a run that ends itself, as `tacfn train`'s does
        super().log_trial_end(trial, failed or diverged)


class _MLflow(_Shaped, MLflowLoggerCallback):
    def log_trial_start(self, trial) -> None:
        # Ray's own start, with the run's name, tags and whole config (Ray's would log the
        # sampled keys only, and tag the run with the trial's name alone).
        if trial not in self._trial_runs:
            info = self.trials.info(trial)
            run = self.mlflow_util.start_run(run_name=info.name, tags=info.tags)
            self._trial_runs[trial] = run.info.run_id
            self.mlflow_util.log_params(run_id=run.info.run_id, params_to_log=info.params)


class _Wandb(_Shaped, WandbLoggerCallback):
    def setup(self, *args: Any, **kwargs: Any) -> None:
        with _environ(WANDB_MODE=self.kwargs["mode"]):  # an offline run needs no API key
            super().setup(*args, **kwargs)

    def log_trial_start(self, trial) -> None:
        # Ray passes self.kwargs to wandb.init last: this trial's name, group, tags and config.
        info = self.trials.info(trial)
        self.kwargs = {**self.kwargs, "name": info.name, "group": info.group, "tags": wandb_tags(info.tags), "config": info.params}
        super().log_trial_start(trial)


class _TensorBoardFiles(LoggerCallback):
    """One :class:`~tacfn.trackers.TensorBoardRun` per trial, in ``logdir/RUN NAME``, named
    by ``self.trials`` (:class:`_Shaped` sets it)."""

    trials: _Trials

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.runs: dict[Any, TrackerRun] = {}

    def log_trial_start(self, trial) -> None:
        if trial not in self.runs:
            self.runs[trial] = TensorBoardRun(self.logdir, self.trials.info(trial))

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        self.log_trial_start(trial)
        metrics = dict(result)
        step = metrics.pop(TRAINING_ITERATION)
        self.runs[trial].log(metrics, step)

    def log_trial_end(self, trial, failed: bool = False) -> None:
        run = self.runs.pop(trial, None)
        if run is not None:
            run.finish(failed)


class _TensorBoard(_Shaped, _TensorBoardFiles):
    pass


def tracker_callbacks(trackers: list[Tracker], experiment: str, base: dict[str, Any], describe: Describe | None = None) -> list[LoggerCallback]:
    """The Tune callbacks that log each trial to ``trackers`` (their destinations filled in:
    see :func:`~tacfn.trackers.with_destinations`); ``experiment`` groups a search's W&B runs."""
    callbacks: list[LoggerCallback] = []
    for tracker in trackers:
        trials = _Trials(base, experiment, describe)
        if isinstance(tracker, MLflowTracker):
            callbacks.append(_MLflow(trials, tracker.tracking_uri, experiment_name=tracker.experiment))
        elif isinstance(tracker, WandbTracker):
            callbacks.append(_Wandb(trials, project=tracker.project, dir=tracker.dir, mode=tracker.mode))
        else:
            assert tracker.logdir, "see with_destinations"
            callbacks.append(_TensorBoard(trials, tracker.logdir))
    return callbacks


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Environment variables set for a moment, then as they were."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_chosen(trackers: list[Tracker], experiment: str, base: dict[str, Any], params: dict[str, Any], row: dict[str, Any]) -> None:
    """Write a search's chosen trial (its store ``row``, scored on test) to every tracker: its
    config and tags as the trial's own run has them, plus ``chosen=true``, and its ``test_*``
    metrics and best epoch, at the step of that epoch."""
    cfg = trial_run_config(base, params, check_model=False)
    info = run_info(cfg, f"chosen-{row['trial_id']}", trial_id=row["trial_id"], group=experiment)
    info = info._replace(tags={**info.tags, "chosen": "true"})
    test = {key: value for key, value in row.items() if key.startswith("test_")}
    metrics = {key: value for key, value in end_metrics([], test).items() if key != "epochs_run"}
    metrics["best_epoch"] = row["best_epoch"]
    log_finished_run(trackers, info, metrics, int(row["best_epoch"] or 0))
