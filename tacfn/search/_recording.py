"""Recording a search or ablation: each trial's row, epochs and predictions, written to the
results store by the driver as the trial ends (:class:`StoreCallback`)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray import tune

from ..errors import DataError
from ..store import CONFIG_PREFIX, ExperimentStore, param_columns
from ..trackers._content import best_epoch, run_params
from ._racing import Race
from ._space_compile import config_hash
from ._trainable import trial_run_config


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StoreCallback(tune.Callback):
    """Writes each trial to the results store as it ends (driver side), and prints progress.

    A search's trial config is what Optuna sampled (the active axes' dotted keys): each row
    gets it as ``param.<key>`` columns, one per key of ``axes`` (see
    :func:`~tacfn.store.param_columns`), unless the store predates them
    (:attr:`~tacfn.store.ExperimentStore.records_params`). An ablation passes no ``axes``:
    its variants are chosen by the plan, not sampled, and its rows name them in ``variant``.

    A store write that fails (a full disk, a folder gone) ends the search with its DataError
    at the next step: Tune only logs an error raised where a trial ends, and would go on
    with results that the store no longer records.
    """

    def __init__(
        self,
        store: ExperimentStore,
        base: dict[str, Any],
        total: int,
        quiet: bool = False,
        describe: Callable[[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]] | None = None,
        replaces: Callable[[dict[str, Any]], list[str]] | None = None,
        axes: Sequence[str] = (),
        race: Race | None = None,
    ) -> None:
        self.store = store
        self.race = race
        self.axes = list(axes) if store.records_params else []
        self.base = base
        self.total = total
        self.quiet = quiet
        # A trial's Tune config -> (dotted run-config params, extra columns such as `variant`).
        self.describe = describe or (lambda config: (dict(config), {}))
        # A trial's Tune config -> the ids of earlier attempts its record replaces (an ablation's rerun).
        self.replaces = replaces or (lambda config: [])
        self.epochs: dict[str, dict[int, dict[str, Any]]] = {}
        self.started: dict[str, datetime] = {}
        self.recorded = self._recorded()  # an unreadable store fails here, before Ray starts
        self.failure: DataError | None = None

    def _recorded(self) -> set[str]:
        return set(self.store.trials().column("trial_id").to_pylist())

    def setup(self, **info: Any) -> None:  # type: ignore[override]  # Tune calls it with keywords only
        # A resumed search reruns a trial the store recorded after Tune's last snapshot of the
        # experiment: the store keeps the first record, as Optuna keeps the first outcome.
        self.recorded = self._recorded()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, _now())

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.started.setdefault(trial.trial_id, _now())
        if "epoch" in result and result.get("epoch", 0) > 0:
            row = {k: result[k] for k in ("epoch", "train_loss", "train_score", "val_loss", "val_score", "val_weighted_f1", "seconds") if k in result}
            self.epochs.setdefault(trial.trial_id, {})[int(result["epoch"])] = row

    def on_step_end(self, iteration, trials, **info) -> None:
        if self.failure is not None:
            raise self.failure  # raised here, it ends Tuner.fit

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._record(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial, error=_error_line(trial))

    def _record(self, trial, error: str | None) -> None:
        buffered = list(self.epochs.pop(trial.trial_id, {}).values())
        if self.failure is not None or trial.trial_id in self.recorded:  # the search is ending, or a rerun
            return
        result = trial.last_result or {}
        epochs = trial_epochs(result, buffered)
        if error:
            status = "failed"
        elif result.get("status") == "diverged":
            status, error = "diverged", result.get("error")
        else:
            status = "completed" if result.get("finished") else "pruned"
        params, extra = self.describe(trial.config)
        row = {**trial_row(trial.trial_id, self.base, params, epochs, result, status, error), **extra, **result.get("summary", {})}
        row.update(param_columns(trial.config, self.axes))
        row["started_at"] = self.started.pop(trial.trial_id, None)
        row["finished_at"] = _now()
        row["node"] = result.get("node_ip")
        row["node_id"] = result.get("node_id")  # several nodes may share one IP
        row["worker"] = f"{result.get('node_ip')}:{result.get('pid')}" if result.get("pid") else None
        if self.race is not None:
            self._mark_replicate(row)
        # Predictions travel as a JSON string: Tune's loggers would try to plot a list.
        predictions = json.loads(result["predictions_json"]) if result.get("predictions_json") else {}
        try:
            self.store.record_trial(row, epochs, prediction_rows(predictions), replaces=self.replaces(trial.config))
        except DataError as err:
            self.failure = err
            return
        self.recorded.add(trial.trial_id)
        if not self.quiet:
            score = row.get("val_score")
            shown = f"{score:.3f}" if isinstance(score, float) and not math.isnan(score) else "-"
            named = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in {**extra, **params}.items())
            print(f"[{len(self.recorded)}/{self.total}] trial {trial.trial_id} {status:<9} val {shown}  {named}", flush=True)


    def _mark_replicate(self, row: dict[str, Any]) -> None:
        """A seed-aware search's row: its ``replicate``, and ``raced_out`` when, with it in, the
        racing test stops its configuration (the searcher decides the same from the same rows)."""
        assert self.race is not None
        row["replicate"] = self.race.replicate_of(row["seed"], row["fold"])
        confs = self.race.configurations([*self.store.trials().to_pylist(), row])
        row["raced_out"] = self.race.verdict(confs, row["config_hash"]) == "raced_out"


def trial_epochs(result: dict[str, Any], seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's epochs: the whole history its last report carries, else the epochs this driver
    ``seen`` reported. A trial restarted from a checkpoint sends its history at the end: this
    driver may not have seen its first epochs."""
    return json.loads(result["history_json"]) if result.get("history_json") else seen


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "trial failed (see the Ray logs)"


def configuration_hash(base: dict[str, Any], params: dict[str, Any]) -> str:
    """The ``config_hash`` of the configuration ``params`` applied to ``base``: the same for each of its seeds and folds."""
    return config_hash(trial_run_config(base, params, check_model=False).model_dump(mode="json"))


def trial_row(trial_id: str, base: dict, params: dict, epochs: list[dict], result: dict, status: str, error: str | None) -> dict[str, Any]:
    """A trials.parquet row: flattened config, metrics at the best validation epoch."""
    cfg = trial_run_config(base, params, check_model=False)  # the trial built it
    full = cfg.model_dump(mode="json")
    architecture = cfg.architecture()
    columns = run_params(cfg, CONFIG_PREFIX)  # what a tracker gets as params; the hash stays on the config as written
    best = best_epoch(epochs)
    return {
        "trial_id": trial_id,
        "status": status,
        "seed": cfg.train.seed,
        "fold": cfg.data.fold,
        "config_hash": config_hash(full),
        **columns,
        "val_score": best["val_score"] if best else None,
        "val_weighted_f1": best["val_weighted_f1"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "epochs_run": len(epochs),
        "seconds": sum(e.get("seconds", 0.0) for e in epochs),
        "latency_ms": result.get("latency_ms"),
        "num_parameters": result.get("num_parameters"),
        "trainable_parameters": result.get("trainable_parameters"),
        "dataset": architecture.dataset,
        "chosen": False,
        "error": error,
    }


def prediction_rows(predictions: dict[str, list]) -> list[dict[str, Any]]:
    """Test predictions as store rows; IEMOCAP's per-emotion predictions get one row per task."""
    from ..data.iemocap import IEMOCAP_EMOTIONS

    rows = []
    for sample, label, pred in zip(predictions.get("id", []), predictions.get("label", []), predictions.get("pred", [])):
        if isinstance(label, list):
            for task, (lab, prd) in enumerate(zip(label, pred)):
                rows.append({"split": "test", "sample_id": sample, "task": IEMOCAP_EMOTIONS[task], "label": lab, "pred": prd})
        else:
            rows.append({"split": "test", "sample_id": sample, "task": None, "label": label, "pred": pred})
    return rows
