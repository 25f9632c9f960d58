"""Ablation plans: variants of a baseline run on the same seeds and folds, so every
comparison with the baseline is paired.

A plan (YAML):

```yaml
name: ablation_fusion
base:                      # a RunConfig mapping shared by every variant
  model: {preset: lite, backbone: frozen}
  train: {epochs: 8}
baseline: tacfn            # the variant the others are compared with
variants:                  # name -> dotted RunConfig overrides
  tacfn: {}
  no_cross_modal: {model.fusion.name: concat}
  no_residual: {model.fusion.residual: false}
  audio_only: {model.modalities: [audio], model.fusion.name: concat}
seeds: [0, 1, 2]
folds: [0, 1]
concurrency: 2
resources: {cpu: 1, gpu: 0}
loggers: [mlflow, tensorboard]   # experiment trackers, opt in (see tacfn.trackers)
```

Every (variant, seed, fold) is one trial; each is scored on its fold's test actors with the
weights of its best validation epoch (timed there: ``test_ms_per_sample``, see
:func:`tacfn.training.score_test`), and lands in the results store with a ``variant`` column
and its parameter counts (``num_parameters``, ``trainable_parameters``).
Its rows have no ``param.*`` columns: a variant's overrides are chosen by the plan, not
sampled, and ``config.*`` holds them.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ray import tune

from ..config import RunConfig, load_yaml, parse_run_config
from ..errors import ConfigError, describe_validation_error
from ..nested import apply_overrides, has_dotted
from ..store import EXPERIMENT_FILE, ExperimentStore, Location, absolute_root
from ..tasks import default_cache_dir, load_task
from ..trackers._schema import Trackers, check_installed, with_destinations
from ..training import EpochRecord, Trainer, train
from ._ray import check_local_capacity, check_ray_address, init_ray, starts_local_ray, unfinished
from ._recording import StoreCallback
from ._space import SEARCH_SPACES_DIR
from ._space_schema import Resources, check_folder_name


class AblationPlan(BaseModel):
    """A validated ablation plan."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    base: dict[str, Any] = Field(default_factory=dict)
    baseline: str
    variants: dict[str, dict[str, Any]]
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    folds: list[int] = Field(default_factory=lambda: [0])
    concurrency: int = Field(1, ge=1)
    resources: Resources = Field(default_factory=Resources)
    loggers: Trackers | None = None

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        return check_folder_name(name)

    @field_validator("variants")
    @classmethod
    def _two_or_more(cls, variants: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if len(variants) < 2:
            raise ValueError(f"an ablation needs a baseline and at least one other variant, but got {list(variants)}")
        return {name: dict(overrides or {}) for name, overrides in variants.items()}

    @field_validator("seeds", "folds")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        if not values or len(set(values)) != len(values):
            raise ValueError(f"needs at least one value, all distinct, but got {values}")
        return values

    @model_validator(mode="after")
    def _check(self) -> AblationPlan:
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not a variant; variants: {list(self.variants)}")
        # Each fold and each variant must make a valid run: the run config's own rules decide
        # (the protocol's fold count, a dataset with one fixed split, the model's constraints).
        for fold in self.folds:
            _run_config(self.base, {"data.fold": fold}, f"fold {fold}")
        # A variant is compared with the baseline on the same seeds and folds, so one that makes
        # the same run as the baseline or as another variant compares nothing.
        first = {"train.seed": self.seeds[0], "data.fold": self.folds[0]}
        seen: list[tuple[tuple[Any, ...], str]] = []
        for name in sorted(self.variants, key=lambda name: name != self.baseline):  # the baseline first
            cfg = _run_config(self.base, {**self.variants[name], **first}, f"variant {name}")
            run = (cfg.architecture(), cfg.model.checkpoints, cfg.data, cfg.train)
            same = next((other for earlier, other in seen if earlier == run), None)
            if same is not None:
                what = "the baseline" if same == self.baseline else "variant"
                raise ValueError(
                    f"variant {name!r} {self.variants[name]} makes the same run as {what} {same!r} "
                    f"{self.variants[same]}, so comparing them measures nothing; change or drop one"
                )
            seen.append((run, name))
        return self


def _run_config(base: dict[str, Any], overrides: dict[str, Any], source: str) -> RunConfig:
    """The run config ``overrides`` make of ``base``; a rule it breaks raises ValueError naming ``source``."""
    try:
        return parse_run_config(apply_overrides(base, overrides), source)
    except ConfigError as err:
        raise ValueError(str(err)) from None


def parse_plan(data: Any, source: str = "<plan>") -> AblationPlan:
    """Validate a plan mapping; ConfigError names the file, the key and the rule."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping (name, base, baseline, variants, seeds, folds)")
    try:
        return AblationPlan.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source}: {describe_validation_error(err, AblationPlan)}") from None


def find_plan(name_or_path: str | Path) -> Path:
    """A plan file: an existing path, or the name of a shipped one (``ablation_fusion``)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = SEARCH_SPACES_DIR / f"{name_or_path}.yaml"
    if not shipped.exists():
        raise ConfigError(f"ablation plan {str(name_or_path)!r} not found (a path, or a file in {SEARCH_SPACES_DIR})")
    return shipped


def load_plan(name_or_path: str | Path) -> AblationPlan:
    """A plan by path, or by the name of a shipped one (``ablation_fusion``)."""
    path = find_plan(name_or_path)
    return parse_plan(load_yaml(path), str(path))


def _runs(plan: AblationPlan) -> list[dict[str, Any]]:
    return [
        {"variant": variant, "train.seed": seed, "data.fold": fold}
        for variant in plan.variants
        for seed in plan.seeds
        for fold in plan.folds
    ]


def _run_key(run: dict[str, Any]) -> tuple[str, int, int]:
    """A run's (variant, seed, fold)."""
    return run["variant"], run["train.seed"], run["data.fold"]


def _row_key(row: dict[str, Any]) -> tuple[str, int, int]:
    """The (variant, seed, fold) of a trials.parquet row."""
    return row["variant"], row["seed"], row["fold"]


def _params(plan_variants: dict[str, dict[str, Any]], run: dict[str, Any]) -> dict[str, Any]:
    return {**plan_variants[run["variant"]], "train.seed": run["train.seed"], "data.fold": run["data.fold"]}


def _prepare_folds(base: dict[str, Any], folds: list[int], *, quiet: bool) -> None:
    """Pretrain each fold's encoders and cache their features here, once, before the runs
    start: otherwise the first runs of a fold would each do it at the same time."""
    cfg = parse_run_config(base, "base", check_model=False)
    if cfg.model.pretrain is None and cfg.architecture().backbone != "frozen":
        return
    for fold in folds:
        fold_cfg = parse_run_config(apply_overrides(base, {"data.fold": fold}), "base", check_model=False)
        if not quiet:
            print(f"fold {fold}: pretraining and encoding once for every run", flush=True)
        Trainer(fold_cfg, load_task(fold_cfg), progress=not quiet)


def run_ablation_trial(config: dict[str, Any], *, base: dict[str, Any], variants: dict[str, dict[str, Any]]) -> None:
    """One (variant, seed, fold): train, select on validation, score the test fold once."""
    run = config["run"]
    cfg = parse_run_config(apply_overrides(base, _params(variants, run)), f"variant {run['variant']}", check_model=False)
    workdir = Path(tempfile.mkdtemp(prefix="tacfn-ablation-"))
    static = {"target_epochs": cfg.train.epochs}

    def report(record: EpochRecord) -> None:
        tune.report({**asdict(record), **static, "status": "running", "finished": False})

    try:
        result = train(cfg, out_dir=workdir, on_epoch=report)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    last = asdict(result.history[-1]) if result.history else {"epoch": 0, "val_score": 0.0}
    summary: dict[str, Any] = {}
    if result.test:
        summary = {
            "test_score": result.test["score"],
            "test_weighted_f1": result.test["weighted_f1"],
            "test_ms_per_sample": result.test_ms_per_sample,
            **{f"test_missing_{m}": s for m, s in result.test_missing_modality.items()},
        }
    sizes = {"num_parameters": result.num_parameters, "trainable_parameters": result.trainable_parameters}
    tune.report({**last, **static, **sizes, "status": result.status, "error": result.error, "finished": True, "summary": summary, "predictions_json": json.dumps(result.predictions)})


def run_ablation(plan: AblationPlan, out: Path | str, *, address: str | None = None, quiet: bool = False) -> Path | str:
    """Run every variant on every seed and fold into the experiment folder ``out`` (a local
    folder or a URI such as ``s3://bucket/prefix``, where Ray keeps its experiment too);
    returns that folder, absolute (or the URI).

    Ctrl-C (SIGINT) stops the plan and raises KeyboardInterrupt; running it again into the
    same ``out`` runs what did not complete. A folder holding another plan, or this plan with
    another base (``--set``), is refused before any data is loaded.
    """
    out = absolute_root(out)
    base = dict(plan.base)
    if not has_dotted(base, "data.cache_dir"):
        base = apply_overrides(base, {"data.cache_dir": str(default_cache_dir())})
    # No loggers: the spec as before loggers existed, so a folder from then reruns.
    spec = {**plan.model_dump(mode="json", exclude={"loggers"} if plan.loggers is None else None), "base": base}
    # A missing tracker library, an unreachable cluster, a run larger than this machine or
    # missing data fails before anything is written. Synthetic data is written once here, not
    # raced for by the first trials.
    check_installed(plan.loggers, "loggers")
    trackers = with_destinations(plan.loggers, out, plan.name, "loggers")
    check_ray_address(address)
    if starts_local_ray(address):
        check_local_capacity(plan.resources.cpu, plan.resources.gpu, "resources")
    if Location(out).exists(EXPERIMENT_FILE):
        ExperimentStore.create(out, "ablation", plan.name, spec)  # reopens it: the same plan, or ConfigError
    task = load_task(parse_run_config(base, "base"), progress=not quiet)
    _prepare_folds(base, plan.folds, quiet=quiet)
    store = ExperimentStore.create(
        out, "ablation", plan.name, spec, hardware={"gpus": plan.resources.gpu}, dataset=task.dataset_record()
    )
    # A rerun skips the completed runs and runs the others again, each record replacing the
    # earlier attempt's: one row per (variant, seed, fold).
    attempts: dict[tuple[str, int, int], list[str]] = {}
    done: set[tuple[str, int, int]] = set()
    for row in store.trials().to_pylist():
        attempts.setdefault(_row_key(row), []).append(row["trial_id"])
        if row["status"] == "completed":
            done.add(_row_key(row))
    runs = [r for r in _runs(plan) if _run_key(r) not in done]
    init_ray(address)
    trainable = tune.with_parameters(run_ablation_trial, base=base, variants=plan.variants)
    trainable = tune.with_resources(trainable, {"cpu": plan.resources.cpu, "gpu": plan.resources.gpu})

    def describe(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        run = config["run"]
        return _params(plan.variants, run), {"variant": run["variant"]}

    def replaces(config: dict[str, Any]) -> list[str]:
        return attempts.get(_run_key(config["run"]), [])

    callbacks: list[tune.Callback] = [StoreCallback(store, base, len(_runs(plan)), quiet=quiet, describe=describe, replaces=replaces)]
    if trackers:
        from ._trackers import tracker_callbacks

        callbacks += tracker_callbacks(trackers, plan.name, base, describe)
    t0 = time.perf_counter()
    if runs:
        grid = tune.Tuner(
            trainable,
            param_space={"run": tune.grid_search(runs)},
            tune_config=tune.TuneConfig(max_concurrent_trials=plan.concurrency),
            run_config=tune.RunConfig(name="ray", storage_path=str(out), callbacks=callbacks, verbose=0),
        ).fit()
        earlier = {trial_id for ids in attempts.values() for trial_id in ids}
        recorded = {_row_key(row) for row in store.trials().to_pylist() if row["trial_id"] not in earlier}
        if unfinished(grid) or any(_run_key(r) not in recorded for r in runs):
            raise KeyboardInterrupt(f"add --resume to the same command to finish the plan in {out}")
    store.compact()  # a finished plan leaves its three tables whole, for any Parquet reader
    if not quiet:
        print(f"ablation finished in {time.perf_counter() - t0:.0f} s")
    return out

