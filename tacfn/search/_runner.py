"""Run a search: Ray Tune with an Optuna sampler (TPE by default), optional ASHA, results in the store.

The driver writes the results store itself as trials finish (Ray's own experiment state is
saved only every few seconds; see :mod:`._recording`), and the Ray experiment folder inside
the store stays restorable with ``Tuner.restore``: ``run_search(..., resume=True)``
continues an interrupted search, keeping completed trials once and rerunning unfinished
ones. When every trial has ended, :mod:`._choosing` picks the best and scores it on test.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ..config import parse_run_config
from ..errors import ConfigError
from ..nested import apply_overrides, has_dotted
from ..run_folder import TRAIN_DIR
from ..store import ExperimentStore, Location, absolute_root
from ..tasks import TaskData, default_cache_dir, load_task
from ..trackers._schema import check_installed, with_destinations
from ..training import Trainer
from ._choosing import SearchSummary, choose_and_test, choose_configuration
from ._distributed import SharedTask, TrialWorkers
from ._ray import check_local_capacity, check_ray_address, init_ray, starts_local_ray, unfinished
from ._racing import Race
from ._recording import StoreCallback
from ._samplers import create_sampler
from ._searcher import CONVERGED, PrunableOptunaSearch
from ._seed_aware import SeedAwareOptunaSearch
from ._space_compile import SearchSpace, SpaceInfo, compile_space
from ._space_schema import SearchSettings, SearchSpec
from ._study import optuna_file, recover_study, upload_optuna_file
from ._trainable import encoder_identity, run_trial

RAY_DIR = "ray"
TRIAL_DRIVER_MEMORY = 1 << 20  # what a multi-worker trial's own process reserves (see _trial_trainable)


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


def _trial_trainable(settings: SearchSettings, base: dict[str, Any], tasks: dict[str, TaskData], out: Path | str):
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
            shared=tasks,
            measure_latency="latency_ms" in settings.objectives,
            checkpoint_interval_s=settings.checkpoint_interval_s,
        )
        return tune.with_resources(trainable, {"cpu": resources["CPU"], "gpu": resources["GPU"]})
    workers = TrialWorkers(settings.workers, resources, str(Location(out).child(TRAIN_DIR)), settings.max_failures)
    trainable = tune.with_parameters(
        run_trial,
        base=base,
        shared={identity: SharedTask.put(task) for identity, task in tasks.items()},
        workers=workers,
        measure_latency="latency_ms" in settings.objectives,
    )
    return tune.with_resources(trainable, tune.PlacementGroupFactory([{"memory": TRIAL_DRIVER_MEMORY}]))


def shared_task(base: dict[str, Any], progress: bool) -> tuple[TaskData, str]:
    """The data every trial of the base configuration needs, prepared once in the driver."""
    cfg = parse_run_config(base, "base")
    task = load_task(cfg, progress=progress)
    if cfg.architecture(task.input_lengths).backbone == "frozen":
        task = Trainer(cfg, task).task  # encodes once into the feature cache
        _release_cached_gpu_memory()
    return task, encoder_identity(cfg)


def shared_tasks(base: dict[str, Any], race: Race | None, progress: bool) -> dict[str, TaskData]:
    """The data of the base configuration and, in a seed-aware search, of every replicate's
    (seed, fold): each prepared once here (a fold's encoders pretrained once, not by two
    trials at a time), and one copy per identity shared by the trials (see encoder_identity)."""
    task, identity = shared_task(base, progress)
    tasks = {identity: task}
    for seed, fold in race.plan if race is not None else ():
        replicate = apply_overrides(base, {"train.seed": seed, "data.fold": fold})
        if encoder_identity(parse_run_config(replicate, "base")) not in tasks:
            task, identity = shared_task(replicate, progress)
            tasks[identity] = task
    return tasks


def _release_cached_gpu_memory() -> None:
    """Hand back what encoding left in PyTorch's CUDA cache (GiBs for the paper encoders):
    the driver shares the GPU with the trials for the whole search, outside Ray's accounting."""
    if torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def experiment_spec(spec: SearchSpec, settings: SearchSettings | None = None) -> dict[str, Any]:
    """The spec a search of ``spec`` records in ``experiment.json`` (and a resumed search must
    match): its base with the feature cache folder filled in, and ``settings`` (default: its own)."""
    base = dict(spec.base)
    if not has_dotted(base, "data.cache_dir"):
        base = apply_overrides(base, {"data.cache_dir": str(default_cache_dir())})
    return {**_dump(spec), "base": base, "search": _dump(settings or spec.search)}


def _dump(model: SearchSpec | SearchSettings) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


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

    ``points`` are parameter sets (dotted keys) to evaluate first, before ``search.sampler`` samples.
    With ``search.objectives`` the search is multi-objective (validation score against
    parameters or latency): Optuna gets every objective and the store marks the Pareto front.
    ``out`` is a local folder or a URI (``s3://bucket/prefix``): Ray keeps its experiment and
    checkpoints there too, and the Optuna file is staged locally (see :func:`._study.optuna_file`).
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
    spec_dump = experiment_spec(spec, settings)
    base = spec_dump["base"]
    # Bad input (a missing tracker library, an unreachable cluster, a trial larger than this
    # machine, a damaged Optuna file with nothing to rebuild it from, missing data, an
    # unreadable store) fails before Ray starts, and all but the last before anything is written.
    check_installed(settings.loggers, "search.loggers")
    trackers = with_destinations(settings.loggers, out, spec.name, "search.loggers")
    check_ray_address(address)
    if starts_local_ray(address):
        check_local_capacity(settings.resources.cpu, settings.resources.gpu, "search.resources", workers=settings.workers)
    ray_path = str(Location(out).child(RAY_DIR))
    if resume:
        _check_in_place(out)
        resume = _restorable(out, ray_path, quiet)
    base_cfg = parse_run_config(base, "base")
    race = Race(settings, base_cfg.train.seed, base_cfg.data.fold) if settings.seeds or settings.folds else None
    study_file = optuna_file(out, resume)
    if resume:  # a damaged or missing study is rebuilt from the store, or refused, here
        recover_study(study_file, out, spec.name, info, settings.metric, settings.objectives, race)
    tasks = shared_tasks(base, race, progress=not quiet)
    task = next(iter(tasks.values()))
    store = ExperimentStore.create(
        out, "search", spec.name, spec_dump, hardware={"gpus": settings.resources.gpu}, dataset=task.dataset_record()
    )
    runs = settings.trials * (len(race.plan) if race else 1)  # Tune trials: one per replicate
    callbacks: list[tune.Callback] = [
        StoreCallback(store, base, runs, quiet=quiet, axes=[axis.key for axis in info.axes], race=race)
    ]
    if trackers:
        from ._trackers import tracker_callbacks

        callbacks += tracker_callbacks(trackers, spec.name, base)

    init_ray(address, dashboard=settings.workers > 1)  # Train inside Tune needs the dashboard (see init_ray)
    trainable = _trial_trainable(settings, base, tasks, out)
    if resume:  # the searcher is Tune's snapshot of it: the sampler the search started with, and its state
        tuner = tune.Tuner.restore(ray_path, trainable=trainable, resume_unfinished=True, restart_errored=True)
    else:
        searcher_class, replicates = (PrunableOptunaSearch, {}) if race is None else (SeedAwareOptunaSearch, {"race": race, "base": base})
        searcher = searcher_class(
            **replicates,
            space=SearchSpace(info),
            metric=[settings.metric, *settings.objectives] if settings.objectives else settings.metric,
            mode=["max", *["min"] * len(settings.objectives)] if settings.objectives else "max",
            points_to_evaluate=points,
            sampler=create_sampler(settings),
            storage=optuna.storages.RDBStorage(f"sqlite:///{study_file}"),
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
        # Tune (and with it ASHA, and each Result's ranking) compares trials on the best epoch so
        # far, the weights a trial keeps and the value Optuna and the store get (see _trainable).
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=None if settings.objectives else f"best_{settings.metric}",
                mode=None if settings.objectives else "max",
                search_alg=searcher,
                reuse_actors=settings.workers == 1,  # a new process per trial costs seconds each
                scheduler=scheduler,
                num_samples=runs,
                max_concurrent_trials=settings.concurrency,
            ),
            run_config=tune.RunConfig(
                name=RAY_DIR,
                storage_path=str(out),
                callbacks=callbacks,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=settings.max_failures),
                verbose=0,
            ),
        )
    t0 = time.perf_counter()
    try:
        grid = tuner.fit()
    finally:
        upload_optuna_file(study_file, out)
    converged = optuna.load_study(study_name=spec.name, storage=f"sqlite:///{study_file}").user_attrs.get(CONVERGED, False)
    # A search that ran to its end recorded every trial it started, `trials` of them unless the
    # sampler converged: the grid alone misses a Ctrl-C in the step where the last running trial ended.
    started = _configurations_recorded(store, race)
    if unfinished(grid) or (started < settings.trials and not converged):
        raise KeyboardInterrupt(f"continue with tacfn search --out {out} --resume")
    if converged and not quiet:
        print(f"the {settings.sampler} sampler proposed only configurations already run ({PrunableOptunaSearch.MAX_REPEATS} in a row): "
              f"the search stopped after {started} of {settings.trials} trials")
    seconds = time.perf_counter() - t0
    if race is None:
        summary = choose_and_test(store, grid, base, tasks, settings.resources.gpu, seconds, quiet)
    else:
        summary = choose_configuration(store, grid, race, base, tasks, settings.resources.gpu, seconds, quiet)
    if trackers and summary.scored_now:
        from ._trackers import log_chosen

        chosen = next(row for row in store.trials().to_pylist() if row["trial_id"] == summary.best_trial)
        log_chosen(trackers, spec.name, base, summary.best_params, chosen)
    store.compact()  # a finished search leaves its three tables whole, for any Parquet reader
    return summary


def _configurations_recorded(store: ExperimentStore, race: Race | None) -> int:
    """Configurations the store holds: trials, or a seed-aware search's configurations."""
    rows = store.trials()
    return rows.num_rows if race is None else len(race.configurations(rows.to_pylist()))


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
    stale = optuna_file(out, resume=False)
    if stale.exists():
        stale.unlink()
    if not quiet:
        print(f"{out}: the search stopped before its first trial; starting it over")
    return False


def _max_epochs(info: SpaceInfo, base_epochs: int) -> int:
    """The most epochs a trial can run: ASHA stops every trial at its ``max_t``."""
    for axis in info.axes:
        if axis.key == "train.epochs":
            top = max(axis.choices) if axis.kind == "choice" else axis.high
            assert isinstance(top, (int, float)), "train.epochs is an int axis or a choice of ints"
            return max(base_epochs, int(top))
    return base_epochs
