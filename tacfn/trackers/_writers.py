"""Tracker runs written with each library's own API, in this process.

``tacfn train`` logs through these (:class:`RunTrackers`); so do a search's TensorBoard
files (:mod:`tacfn.search._trackers`), which Ray Tune writes with tensorboardX as these do.
A search's MLflow and W&B runs go through Ray Tune's own logger callbacks instead.
Each library is imported when a run opens (see :func:`~._schema.check_installed`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._content import RunInfo, end_metrics, epoch_metrics, scores_on_test
from ._schema import MLflowTracker, Tracker, WandbTracker

if TYPE_CHECKING:
    from ..training import EpochRecord, RunResult

MLFLOW_BATCH = 100  # MLflow's most params or metrics in one log_batch call


class TrackerRun(Protocol):
    """One run in one tracker."""

    def log(self, metrics: Mapping[str, float], step: int) -> None: ...

    def finish(self, failed: bool) -> None: ...


def wandb_tags(tags: Mapping[str, str]) -> list[str]:
    """W&B's tags are plain strings: ``key=value``."""
    return [f"{key}={value}" for key, value in tags.items()]


class _MLflowRun:
    def __init__(self, tracker: MLflowTracker, info: RunInfo) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        assert tracker.tracking_uri and tracker.experiment, "see with_destinations"
        self.client = MlflowClient(tracking_uri=tracker.tracking_uri)
        found = self.client.get_experiment_by_name(tracker.experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(tracker.experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=info.name, tags=info.tags).info.run_id
        params = [Param(key, str(value)) for key, value in info.params.items()]  # str(): as Ray's MLflow logger writes them
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_BATCH])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, float(value), now, step) for key, value in metrics.items()])

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


class _WandbRun:
    def __init__(self, tracker: WandbTracker, info: RunInfo) -> None:
        import wandb

        self.run = wandb.init(
            project=tracker.project, name=info.name, group=info.group, config=info.params, tags=wandb_tags(info.tags),
            dir=tracker.dir, mode=tracker.mode,
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class TensorBoardRun:
    """Event files in ``logdir/RUN NAME``: each metric a scalar at its step and, when the run
    ends, its params and tags against its last metrics for TensorBoard's HParams view."""

    def __init__(self, logdir: str, info: RunInfo) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(logdir) / info.name))
        # HParams takes numbers, strings and booleans (not None, which a default setting may be).
        self.hparams = {key: value for key, value in {**info.params, **info.tags}.items() if value is not None}
        self.last: dict[str, float] = {}

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.last.update(metrics)
        self.writer.flush()

    def finish(self, failed: bool) -> None:
        from tensorboardX.summary import hparams

        for summary in hparams(self.hparams, self.last):  # as Ray Tune's TensorBoard logger writes them
            self.writer.file_writer.add_summary(summary)
        self.writer.close()


def open_run(tracker: Tracker, info: RunInfo) -> TrackerRun:
    """Start ``info``'s run in ``tracker`` (its destination filled in: see with_destinations)."""
    if isinstance(tracker, MLflowTracker):
        return _MLflowRun(tracker, info)
    if isinstance(tracker, WandbTracker):
        return _WandbRun(tracker, info)
    assert tracker.logdir, "see with_destinations"
    return TensorBoardRun(tracker.logdir, info)


def log_finished_run(trackers: list[Tracker], info: RunInfo, metrics: Mapping[str, float], step: int) -> None:
    """Write ``info``'s run, ``metrics`` at ``step``, and close it, in every tracker."""
    for tracker in trackers:
        run = open_run(tracker, info)
        run.log(metrics, step)
        run.finish(failed=False)


class RunTrackers:
    """The trackers of one ``tacfn train`` run: each epoch as it ends (``on_epoch``), the
    result when the run ends (:meth:`end`); :meth:`close` marks a run that did not reach its
    end failed. The runs open at the first epoch: a run that fails before it logs nothing."""

    def __init__(self, trackers: list[Tracker], info: RunInfo) -> None:
        self.trackers = trackers
        self.info = info
        self.runs: list[TrackerRun] | None = None

    def _open(self) -> list[TrackerRun]:
        if self.runs is None:
            self.runs = []
            for tracker in self.trackers:
                self.runs.append(open_run(tracker, self.info))
        return self.runs

    def on_epoch(self, record: EpochRecord) -> None:
        metrics = epoch_metrics(asdict(record))
        for run in self._open():
            run.log(metrics, record.epoch)

    def end(self, result: RunResult) -> None:
        history = [asdict(record) for record in result.history]
        test = scores_on_test(result.test, result.test_missing_modality, result.test_ms_per_sample) if result.test else None
        metrics = end_metrics(history, test)
        for run in self._open():
            run.log(metrics, history[-1]["epoch"] if history else 0)
        self._finish(failed=result.status != "completed")

    def close(self) -> None:
        """Finish the runs still open as failed (the run stopped before its end)."""
        self._finish(failed=True)

    def _finish(self, failed: bool) -> None:
        runs, self.runs = self.runs or [], []
        for run in runs:
            run.finish(failed)

    def __enter__(self) -> RunTrackers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
