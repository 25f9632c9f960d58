"""Run a search: Ray Tune with Optuna's TPE sampler, optional ASHA, results in the store.

The driver writes the results store itself as trials finish (Ray's own experiment state is
saved only every few seconds), and the Ray experiment folder inside the store stays
restorable with ``Tuner.restore``: ``resume_search`` continues an interrupted search,
keeping completed trials once and rerunning unfinished ones.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from ..config import parse_run_config
from ..errors import ConfigError, DataError
from ..run_folder import LAST_CHECKPOINT, TRAIN_DIR
from ..store import CONFIG_PREFIX, ExperimentStore, Location, absolute_root, flatten_config
from ..tasks import TaskData, default_cache_dir, load_task
from ..training import Trainer, score_checkpoint
from ._distributed import SharedTask, TrialWorkers, checkpoint_dir
from ._space import Resources, SearchSettings, SearchSpace, SearchSpec, SpaceInfo, compile_space, config_hash
from ._trainable import encoder_identity, run_trial, trial_run_config

RAY_DIR = "ray"
OPTUNA_FILE = "optuna.db"
RAY_CLIENT_PORT = 10001  # a ray:// address without a port
TRIAL_DRIVER_MEMORY = 1 << 20  # what a multi-worker trial's own process reserves (see _trial_trainable)
CONVERGED = "converged"  # the study's user attribute: TPE proposed only configurations already run


class PrunableOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not run to the end,
    and does not train a configuration twice.

    Ray's OptunaSearch records a trial stopped by ASHA as COMPLETE with its truncated score,
    which misleads TPE. A trial's last result says whether it ran all its epochs
    (``finished``) and how it ended (``status``): unfinished trials are PRUNED, diverged
    ones FAILED, and finished ones COMPLETE with the best validation epoch's score (the
    epoch model selection keeps), where Ray would tell the last epoch's.

    On a discrete space TPE proposes the best configurations again and again; training is
    seeded, so a repeat would only reproduce a known result. A proposal equal to a finished
    trial's is told that trial's outcome at once (Optuna's recipe for duplicated samples,
    marked with the user attribute ``repeat_of``) and Optuna is asked again. After
    ``MAX_REPEATS`` repeats in a row the sampler has converged: the search creates no more
    trials (the study's user attribute ``converged`` turns true) and ends when the running
    ones do.

    It starts ``budget`` trials in all, counting those a resumed Tune lost but ``store``
    recorded (see :meth:`_started`).
    """

    MAX_REPEATS = 20

    def __init__(self, *args: Any, budget: int, store: ExperimentStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.store = store

    def suggest(self, trial_id: str) -> dict | str | None:
        if self._started() >= self.budget:
            return self.FINISHED
        for _ in range(self.MAX_REPEATS):
            config = super().suggest(trial_id)
            earlier = self._finished_with(self._ot_trials[trial_id]) if isinstance(config, dict) else None
            if earlier is None:
                return config
            repeat = self._ot_trials.pop(trial_id)
            repeat.set_user_attr("repeat_of", earlier.number)
            if earlier.state == optuna.trial.TrialState.COMPLETE:
                self._ot_study.tell(repeat, earlier.values if len(earlier.values) > 1 else earlier.value)
            else:
                self._ot_study.tell(repeat, state=earlier.state)
        self._ot_study.set_user_attr(CONVERGED, True)
        return self.FINISHED

    def _started(self) -> int:
        """The trials this search has started: those Tune knows and those the store recorded.

        After a resume, Tune knows the trials of its last snapshot of the experiment; a
        trial that started and ended after it is in the store and counts against the
        budget, so the resumed search does not replace it.
        """
        return len(set(self._ot_trials) | set(self.store.trials().column("trial_id").to_pylist()))

    def _finished_with(self, proposal: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The first trial that completed or was pruned with exactly ``proposal``'s parameters.

        Failed trials do not count: a crash (a lost node, say) says nothing of the config.
        """
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for trial in self._ot_study.get_trials(deepcopy=False, states=finished):
            if trial.params == proposal.params and "repeat_of" not in trial.user_attrs:
                return trial
        return None

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot of the searcher, then fail the study's orphaned trials.

        An Optuna trial the driver created after that snapshot, still running when the
        driver died, belongs to no Tune trial: the resumed search never reruns or tells it,
        so it would read as running forever in ``optuna.load_study`` and optuna-dashboard.
        It is marked FAIL, as Optuna's own ``fail_stale_trials`` marks a trial whose process
        died, and the resumed search starts another in its place. The snapshot's trials stay
        as they are: Tune reruns those that were unfinished and tells their outcome.
        """
        super().restore(checkpoint_path)
        known = {trial.number for trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for orphan in running:
            if orphan.number not in known:
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Nothing: per-epoch values stay out of the study. ASHA stops trials, not an Optuna
        pruner, and the store keeps every epoch; each value would cost the driver a SQLite
        commit per epoch of every trial."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna how the trial ended.

        A resumed search may rerun a trial whose outcome Optuna's file got just before the
        driver died, after Tune's last snapshot: Optuna keeps that first outcome
        (``skip_if_finished``), as the store keeps the first record.
        """
        if error or not result or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        state = None
        if result.get("status") == "diverged":
            state = optuna.trial.TrialState.FAIL
        elif not result.get("finished"):
            state = optuna.trial.TrialState.PRUNED
        ot_trial = self._ot_trials[trial_id]
        if state is None:  # ran every epoch: its value is the best validation epoch's, not the last's
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            score = result[f"best_{metrics[0]}"]
            values = [score, *(result[m] for m in metrics[1:])]
            self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0], skip_if_finished=True)
        else:
            self._ot_study.tell(ot_trial, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class StoreCallback(tune.Callback):
    """Writes each trial to the results store as it ends (driver side), and prints progress.

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
    ) -> None:
        self.store = store
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

    def setup(self, **info) -> None:
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
        # A trial restarted from a checkpoint sends its whole history at the end: this driver
        # may not have seen its first epochs.
        epochs = json.loads(result["history_json"]) if result.get("history_json") else buffered
        if error:
            status = "failed"
        elif result.get("status") == "diverged":
            status, error = "diverged", result.get("error")
        else:
            status = "completed" if result.get("finished") else "pruned"
        params, extra = self.describe(trial.config)
        row = {**trial_row(trial.trial_id, self.base, params, epochs, result, status, error), **extra, **result.get("summary", {})}
        row["started_at"] = self.started.pop(trial.trial_id, None)
        row["finished_at"] = _now()
        row["node"] = result.get("node_ip")
        row["node_id"] = result.get("node_id")  # several nodes may share one IP
        row["worker"] = f"{result.get('node_ip')}:{result.get('pid')}" if result.get("pid") else None
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
            params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in {**extra, **params}.items())
            print(f"[{len(self.recorded)}/{self.total}] trial {trial.trial_id} {status:<9} val {shown}  {params}", flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1][:500] if lines else "trial failed (see the Ray logs)"


def trial_row(trial_id: str, base: dict, params: dict, epochs: list[dict], result: dict, status: str, error: str | None) -> dict[str, Any]:
    """A trials.parquet row: flattened config, metrics at the best validation epoch."""
    cfg = trial_run_config(base, params, check_model=False)  # the trial built it
    full = _without_empty(cfg.model_dump(mode="json"))
    architecture = cfg.architecture()
    columns = flatten_config(full)
    # The preset's block when the config names none (an ablation's baseline), so every row
    # says which block it ran; the hash stays on the config as written.
    columns.setdefault(f"{CONFIG_PREFIX}model.fusion.name", architecture.fusion.name)
    best = max(epochs, key=lambda e: (e["val_score"], -e["epoch"])) if epochs else None
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


def _without_empty(value: Any) -> Any:
    """Drop empty mappings (e.g. no fusion overrides) so they do not become columns."""
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v != {}}
    return value


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


def check_ray_address(address: str | None, timeout: float = 3.0) -> None:
    """Fail fast when no Ray cluster answers at ``address``: Ray itself would retry for minutes.

    ``HOST:PORT`` must accept a TCP connection and answer a GCS call (a cluster with token
    authentication refuses it, which still proves a GCS); ``ray://HOST[:PORT]`` (Ray Client)
    must accept a TCP connection; ``auto`` and ``local`` are left to Ray.
    """
    if not address or address in ("auto", "local"):
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address.startswith("ray://") and not sep:
        host, port = target, str(RAY_CLIENT_PORT)
    if not host or not port.isdigit():
        raise ConfigError(
            f"Ray address {address!r}: expected HOST:PORT of a head node (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} within {timeout:g} s ({err.strerror or err}); "
            "is `ray start --head` running there?"
        ) from None
    if not address.startswith("ray://"):
        answer = _gcs_answer(f"{host}:{port}", timeout)
        if answer not in (grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise ConfigError(
                f"{address!r} accepts connections but does not answer as a Ray cluster's head ({answer.name}); "
                "give the GCS port of `ray start --head` (6379 by default)"
            )


def _gcs_answer(target: str, timeout: float) -> grpc.StatusCode:
    """How a GCS ``GetClusterId`` call to ``target`` ends."""
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout)
        except grpc.RpcError as err:
            return err.code()
    return grpc.StatusCode.OK


def starts_local_ray(address: str | None) -> bool:
    """Whether :func:`init_ray` starts a Ray runtime on this machine rather than joining one."""
    return not address and not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()


def check_local_capacity(resources: Resources, workers: int, what: str) -> None:
    """A trial needing more CPUs or GPUs than this machine has would wait forever on a local
    Ray runtime: say so before anything is written. (A cluster may add nodes: not checked.)"""
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    cpu, gpu = workers * resources.cpu, workers * resources.gpu
    if cpu > cpus or gpu > gpus:
        per = f" ({workers} workers)" if workers > 1 else ""
        raise ConfigError(
            f"{what}: a trial needs {cpu:g} CPUs and {gpu:g} GPUs{per}, but this machine has {cpus} CPUs and {gpus} GPUs; "
            "ask for less, or give --address of a larger Ray cluster"
        )


def init_ray(address: str | None, *, dashboard: bool = False, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address``, checked first: see :func:`check_ray_address`) or
    start a local Ray runtime, its dashboard bound to 127.0.0.1."""
    check_ray_address(address)
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # Trials may checkpoint every epoch and the store is the record of progress: Tune's
    # warning about frequent experiment snapshots is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    kwargs: dict[str, Any] = {"include_dashboard": dashboard, "dashboard_host": "127.0.0.1", "log_to_driver": False}
    if address:
        kwargs = {"address": address, "log_to_driver": False}
    elif not os.environ.get("RAY_ADDRESS"):  # set for a driver `ray job submit` started on a cluster
        # A new local runtime. Tune starts every trial process with its own runtime
        # environment (environment variables), so the idle workers Ray prestarts for the
        # driver never run a trial: they only cost CPU to start and again to stop (2 s each
        # on 2 cores) just as the first trials start.
        kwargs["_system_config"] = {"prestart_worker_first_driver": False}
        if num_cpus:
            kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise ConfigError(f"cannot reach the Ray cluster at {address!r}: {str(err).splitlines()[0]}") from None


def _check_in_place(out: Path | str) -> None:
    """Refuse to resume a search folder that was copied or moved: Ray's saved experiment and
    searcher hold the absolute paths of the folder the search was created in, so the resumed
    search would write there. (Folders from before ``location`` was recorded: not checked.)"""
    created = ExperimentStore.open(out).experiment.get("location")
    if created is not None and created != str(out):
        raise ConfigError(
            f"--resume {out}: this search was created in {created}, and Ray's saved state writes there; "
            f"resume it from {created} (move the folder back), or start a new search"
        )


def _optuna_file(out: Path | str, resume: bool) -> Path:
    """Where the search's Optuna SQLite file lives while it runs: SQLite needs a local file.

    In a local ``out``, ``out/optuna.db``. For a URI, a staging copy under
    ``$TACFN_HOME/staging`` named by the URI (a resumed search's unpickled searcher finds it
    at the same path), fetched from ``out`` to resume on another machine, and copied back to
    ``out`` by :func:`_upload_optuna_file` when the search ends or stops.
    """
    if isinstance(out, Path):
        return out / OPTUNA_FILE
    staged = default_cache_dir() / "staging" / hashlib.sha256(out.encode()).hexdigest()[:16] / OPTUNA_FILE
    staged.parent.mkdir(parents=True, exist_ok=True)
    location = Location(out)
    if not resume:
        staged.unlink(missing_ok=True)  # an earlier experiment's study at the same URI
    elif not staged.exists() and location.exists(OPTUNA_FILE):
        staged.write_bytes(location.read_bytes(OPTUNA_FILE))
    return staged


def _upload_optuna_file(staged: Path, out: Path | str) -> None:
    """Copy a staged Optuna file to the URI ``out`` (a local ``out`` holds it already)."""
    if isinstance(out, str) and staged.exists():
        Location(out).write(OPTUNA_FILE, lambda f: f.write(staged.read_bytes()))


def _trial_trainable(settings: SearchSettings, base: dict[str, Any], task: TaskData, identity: str, out: Path | str):
    """``run_trial`` with its shared data and resources.

    A trial on one worker reserves ``resources`` itself. A trial on several workers only
    waits for its Ray Train workers, which reserve ``resources`` each: its own process
    takes no CPU. Even a sliver would deadlock a full machine: on 2 CPUs, two such trials
    holding 0.01 CPU each leave 1.98, and neither's 2-CPU worker group can ever start. A
    placement group needs some resource, so it reserves a nominal 1 MiB of memory.
    """
    resources = {"CPU": settings.resources.cpu, "GPU": settings.resources.gpu}
    if settings.workers == 1:
        trainable = tune.with_parameters(
            run_trial,
            base=base,
            shared=task,
            shared_identity=identity,
            measure_latency="latency_ms" in settings.objectives,
            checkpoint_interval_s=settings.checkpoint_interval_s,
        )
        return tune.with_resources(trainable, {"cpu": resources["CPU"], "gpu": resources["GPU"]})
    workers = TrialWorkers(settings.workers, resources, str(Location(out).child(TRAIN_DIR)), settings.max_failures)
    trainable = tune.with_parameters(
        run_trial,
        base=base,
        shared=SharedTask.put(task),
        shared_identity=identity,
        workers=workers,
        measure_latency="latency_ms" in settings.objectives,
    )
    return tune.with_resources(trainable, tune.PlacementGroupFactory([{"memory": TRIAL_DRIVER_MEMORY}]))


def _shared_task(base: dict[str, Any], progress: bool) -> tuple[TaskData, str]:
    """The data every trial of the base configuration needs, prepared once in the driver."""
    cfg = parse_run_config(base, "base")
    task = load_task(cfg, progress=progress)
    if cfg.architecture(task.input_lengths).backbone == "frozen":
        task = Trainer(cfg, task).task  # encodes once into the feature cache
        _release_cached_gpu_memory()
    return task, encoder_identity(cfg)


def _release_cached_gpu_memory() -> None:
    """Hand back what encoding left in PyTorch's CUDA cache (GiBs for the paper encoders):
    the driver shares the GPU with the trials for the whole search, outside Ray's accounting."""
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def run_search(
    spec: SearchSpec,
    out: Path | str,
    *,
    address: str | None = None,
    resume: bool = False,
    trials: int | None = None,
    quiet: bool = False,
    points: list[dict[str, Any]] | None = None,
) -> SearchSummary:
    """Run (or, with ``resume``, continue) the search ``spec`` into the experiment folder ``out``.

    ``points`` are parameter sets (dotted keys) to evaluate first, before TPE samples.
    With ``search.objectives`` the search is multi-objective (validation score against
    parameters or latency): Optuna gets every objective and the store marks the Pareto front.
    ``out`` is a local folder or a URI (``s3://bucket/prefix``): Ray keeps its experiment and
    checkpoints there too, and the Optuna file is staged locally (see :func:`_optuna_file`).
    Ctrl-C (SIGINT) stops the search resumably and raises KeyboardInterrupt; the test split
    is scored only once every trial has ended.
    """
    out = absolute_root(out)
    info = compile_space(spec)
    settings = spec.search
    if trials is not None:
        if trials < 1:
            raise ConfigError(f"`trials >= 1` must hold, but got trials={trials}")
        settings = settings.model_copy(update={"trials": trials})
    if settings.objectives and settings.scheduler == "asha":
        raise ConfigError(
            "search.scheduler: ASHA stops trials on one metric, but search.objectives makes this search "
            f"multi-objective ({[settings.metric, *settings.objectives]}); use scheduler: none"
        )
    base = dict(spec.base)
    if "cache_dir" not in base.get("data", {}):
        base = {**base, "data": {**base.get("data", {}), "cache_dir": str(default_cache_dir())}}
    dump = {"mode": "json", "by_alias": True, "exclude_none": True}
    spec_dump = {**spec.model_dump(**dump), "base": base, "search": settings.model_dump(**dump)}
    # Bad input (an unreachable cluster, a trial larger than this machine, missing data, an
    # unreadable store) fails before Ray starts, and all but the last before anything is written.
    check_ray_address(address)
    if starts_local_ray(address):
        check_local_capacity(settings.resources, settings.workers, "search.resources")
    ray_path = str(Location(out).child(RAY_DIR))
    if resume:
        _check_in_place(out)
        resume = _restorable(out, ray_path, quiet)
    task, identity = _shared_task(base, progress=not quiet)
    store = ExperimentStore.create(
        out, "search", spec.name, spec_dump, hardware={"gpus": settings.resources.gpu}, dataset=task.dataset_record()
    )
    callback = StoreCallback(store, base, settings.trials, quiet=quiet)

    init_ray(address, dashboard=settings.workers > 1)  # Train inside Tune needs the dashboard (see init_ray)
    trainable = _trial_trainable(settings, base, task, identity, out)
    optuna_file = _optuna_file(out, resume)
    if resume:
        tuner = tune.Tuner.restore(ray_path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        searcher = PrunableOptunaSearch(
            space=SearchSpace(info),
            metric=[settings.metric, *settings.objectives] if settings.objectives else settings.metric,
            mode=["max", *["min"] * len(settings.objectives)] if settings.objectives else "max",
            points_to_evaluate=points,
            sampler=optuna.samplers.TPESampler(seed=settings.seed),
            storage=optuna.storages.RDBStorage(f"sqlite:///{optuna_file}"),
            study_name=spec.name,
            budget=settings.trials,
            store=store,
        )
        epochs = _max_epochs(info, parse_run_config(base, "base").train.epochs)
        scheduler = (
            ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=settings.asha.grace_period, reduction_factor=settings.asha.reduction_factor)
            if settings.scheduler == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=None if settings.objectives else settings.metric,
                mode=None if settings.objectives else "max",
                search_alg=searcher,
                reuse_actors=settings.workers == 1,  # a new process per trial costs seconds each
                scheduler=scheduler,
                num_samples=settings.trials,
                max_concurrent_trials=settings.concurrency,
            ),
            run_config=tune.RunConfig(
                name=RAY_DIR,
                storage_path=str(out),
                callbacks=[callback],
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                verbose=0,
            ),
        )
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        _upload_optuna_file(optuna_file, out)
    converged = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{optuna_file}").user_attrs.get(CONVERGED, False)
    # A search that ran to its end recorded every trial it started, `trials` of them unless TPE
    # converged: the grid alone misses a Ctrl-C in the step where the last running trial ended.
    if unfinished(grid) or (store.trials().num_rows < settings.trials and not converged):
        raise KeyboardInterrupt(f"continue with tacfn search --resume {out}")
    if converged and not quiet:
        print(f"TPE proposed only configurations already run ({PrunableOptunaSearch.MAX_REPEATS} in a row): "
              f"the search stopped after {store.trials().num_rows} of {settings.trials} trials")
    return _finish(store, grid, base, task, identity, settings.resources.gpu, time.perf_counter() - t0, quiet)


def _restorable(out: Path | str, ray_path: str, quiet: bool) -> bool:
    """Whether ``--resume`` restores Ray's saved experiment, or starts the search over.

    A search stopped before Tune first saved its state (Ctrl-C while Ray started, say) left
    its ``experiment.json`` and maybe an Optuna study of trials asked but never run: with no
    trial recorded there is nothing to keep, so it starts over in the same folder.
    """
    if tune.Tuner.can_restore(ray_path):
        return True
    if ExperimentStore.open(out).trials().num_rows:
        raise ConfigError(f"{out} records trials but holds no restorable Ray experiment (looked for {ray_path})")
    stale = _optuna_file(out, resume=False)
    if stale.exists():
        stale.unlink()
    if not quiet:
        print(f"{out}: the search stopped before its first trial; starting it over")
    return False


def _max_epochs(info: SpaceInfo, base_epochs: int) -> int:
    """The most epochs a trial can run: ASHA stops every trial at its ``max_t``."""
    for axis in info.axes:
        if axis.key == "train.epochs":
            return max(base_epochs, int(max(axis.choices) if axis.kind == "choice" else axis.high))
    return base_epochs


def unfinished(grid: tune.ResultGrid) -> bool:
    """Whether Tune's run ended with trials still to finish: Tune catches Ctrl-C (SIGINT)
    itself, saves the experiment and returns from ``fit`` as if it were done."""
    return grid.num_terminated + grid.num_errors < len(grid)


def _finish(
    store: ExperimentStore, grid, base: dict, task: TaskData, identity: str, gpu: float, seconds: float, quiet: bool
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
    if best.get("chosen") and best.get("test_score") is not None:
        test_score = best["test_score"]
    else:
        test_score = _score_chosen(store, best, result, base, task, identity, gpu)
    if not quiet:
        print(f"search finished in {seconds:.0f} s: {len(completed)} of {len(trials)} trials completed")
    return SearchSummary(
        store.root, len(trials), len(completed), best["trial_id"], params, best["val_score"], test_score, metric, best[metric]
    )


def _rank(trial: dict[str, Any], metric: str) -> tuple:
    """Sorts the best validation value of the search's ``metric`` first and, on a tie, the
    trial that started first (a row without a start time last), then the lower id: the same
    pick on every resume, whatever the order of the store's rows."""
    return -trial[metric], trial["started_at"] is None, trial["started_at"], trial["trial_id"]


def _score_chosen(store: ExperimentStore, best: dict, result, base: dict, task: TaskData, identity: str, gpu: float) -> float:
    """Score the trial ``best`` on the test split from its saved weights and record it as chosen."""
    cfg = trial_run_config(base, result.config, check_model=False)
    checkpoint = result.checkpoint or tune.Checkpoint(checkpoint_dir(result.metrics))  # DDP trials: Train's own
    shared = task if encoder_identity(cfg) == identity else None
    with checkpoint.as_directory() as path:
        weights = Path(path) / LAST_CHECKPOINT
        if gpu:
            scored = _score_remote.options(num_gpus=min(gpu, 1)).remote(cfg.model_dump(mode="json"), shared, str(weights))
            test, missing, predictions = ray.get(scored)
        else:
            test, missing, predictions = score_checkpoint(cfg, shared or load_task(cfg), weights)
    row = {
        **best,
        "chosen": True,
        "test_score": test["score"],
        "test_weighted_f1": test["weighted_f1"],
        **{f"test_missing_{m}": s for m, s in missing.items()},
        **{f"test_{k}": v for k, v in test.items() if k.endswith(("_accuracy", "_weighted_f1")) and k not in ("weighted_f1",)},
    }
    store.record_trial(row, store_epochs(store, best["trial_id"]), prediction_rows(predictions))
    return test["score"]


def _unchoose(store: ExperimentStore, trial: dict[str, Any]) -> None:
    """Record an earlier pick as not chosen, without its test metrics and predictions."""
    row = {k: None if k.startswith("test_") else v for k, v in trial.items()}
    store.record_trial({**row, "chosen": False}, store_epochs(store, trial["trial_id"]))


def _mark_pareto(store: ExperimentStore, completed: list[dict[str, Any]], objectives: list[str]) -> None:
    """Record which completed trials are Pareto-optimal: no other trial scores at least as
    well on validation and costs no more on every objective, and strictly better on one."""

    def key(t: dict[str, Any]) -> tuple[float, ...]:
        return (-t["val_score"], *(t[o] for o in objectives))

    for trial in completed:
        mine = key(trial)
        dominated = any(
            all(a <= b for a, b in zip(key(o), mine)) and key(o) != mine for o in completed if o is not trial
        )
        store.record_trial({**trial, "pareto": not dominated}, store_epochs(store, trial["trial_id"]))


@ray.remote
def _score_remote(cfg_map: dict, task: TaskData | None, checkpoint: str):
    cfg = parse_run_config(cfg_map, "chosen config", check_model=False)
    task = task if task is not None else load_task(cfg)
    return score_checkpoint(cfg, task, Path(checkpoint))


def store_epochs(store: ExperimentStore, trial_id: str) -> list[dict]:
    table = store.epochs()
    rows = [r for r in table.to_pylist() if r["trial_id"] == trial_id]
    return rows


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
