"""The ``tacfn`` command line.

Bad input (a :class:`~tacfn.errors.TacfnError`, or an OSError about the user's paths or
disk) ends with one line on stderr (``tacfn: error: ...``) and exit status 2. Any other
exception is a bug in tacfn: its traceback and a line saying so, exit status 1.
``TACFN_DEBUG=1`` lets every exception propagate, with Python's traceback. The options the
commands share (``--out``, ``--resume``, ``--set``, ``--workers``, ``--jobs``) are in ``GRAMMAR``.
"""

from __future__ import annotations

import argparse
import copy
import errno
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .errors import ConfigError, TacfnError
from .nested import set_dotted
from .run_folder import CHECKPOINTS_DIR, LAST_CHECKPOINT, RESULT_FILE, TRAIN_DIR

if TYPE_CHECKING:
    from .search import SearchSpec

EXIT_USAGE = 2
EXIT_FAILED = 1


def _note(line: str) -> None:
    """One ``tacfn: note:`` line on stderr: something the user may want to know, not an error."""
    print(f"tacfn: note: {line}", file=sys.stderr)


def _set_override(data: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE (e.g. train.epochs=5), got {assignment!r}")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"--set {key}: {raw!r} is not a plain YAML value ({problem})") from None
    set_dotted(data, key, value)


def _with_base_sets(data: Any, assignments: Sequence[str] | None, source: str) -> Any:
    """A space or plan mapping with each ``--set KEY=VALUE`` applied to its ``base``; the
    caller validates the result, so a bad key or value fails before Ray starts."""
    if not assignments or not isinstance(data, dict):
        return data  # nothing to set, or not a mapping: the parser says so
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"{source}: base: expected a mapping for --set to change, got {type(base).__name__}")
    base = copy.deepcopy(base)
    for assignment in assignments:
        _set_override(base, assignment)
    return {**data, "base": base}


# --- data -------------------------------------------------------------------------------


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import FAMILIES, check_effects, planted_ceilings, write_synthetic_ravdess

    effects = [name.strip() for name in args.effects.split(",")] if args.effects.strip() else []
    out = write_synthetic_ravdess(
        Path(args.out_dir),
        actors=args.actors,
        clips_per_actor=args.clips_per_actor,
        seed=args.seed,
        effects=effects,
        progress=True,
    )
    ceilings = planted_ceilings(effects)
    print(f"synthetic RAVDESS tree: {out}")
    print(f"planted effects: {', '.join(check_effects(effects))}")
    print("ceilings, the best accuracy each model family can reach (balanced classes, chance 12.5%):")
    width = max(map(len, FAMILIES))
    for name, family in FAMILIES.items():
        print(f"  {name:<{width}}  {ceilings[name]:>6.1%}  {family.examples}")
    return 0


def _prepare_jobs(args: argparse.Namespace) -> int | None:
    """``--jobs``, or the deprecated ``--workers`` it replaced (``train --workers`` counts DDP ranks)."""
    jobs = args.jobs
    if args.old_workers is not None:
        if jobs is not None:
            raise ConfigError("--workers is the old name of --jobs; give only --jobs")
        _note("data prepare --workers N is now --jobs N (decoding processes)")
        jobs = args.old_workers
    if jobs is not None and jobs < 1:
        raise ConfigError(f"`--jobs >= 1` must hold, but got --jobs {jobs}")
    return jobs


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_ravdess
    from .model import preset_config

    prep = preset_config(args.preset).preprocess
    if prep is None:
        raise ConfigError(f"preset {args.preset!r} does not read RAVDESS media")
    report = prepare_ravdess(Path(args.ravdess_dir), Path(args.out_dir), prep, progress=True, workers=_prepare_jobs(args))
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    print(f"prepared {report.prepared} clips, skipped {len(report.skipped)} -> {args.out_dir}")
    return 0


def _cmd_data_iemocap(args: argparse.Namespace) -> int:
    from .data.iemocap import convert_iemocap

    src = Path(args.src)
    if src.suffix != ".pkl":
        raise ConfigError(f"{src}: expected MulT's feature file, a .pkl (iemocap_data_noalign.pkl)")
    out = convert_iemocap(src, Path(args.out_dir), allow_pickle=True)  # named on the command line
    print(f"IEMOCAP converted to Arrow: {out}")
    return 0


# --- model ------------------------------------------------------------------------------


def _cmd_model_info(args: argparse.Namespace) -> int:
    from .model import create_model
    from .model.summary import format_summary, summarize

    kwargs: dict[str, Any] = {}
    if args.fusion:
        kwargs["fusion"] = args.fusion
    if args.backbone:
        kwargs["backbone"] = args.backbone
    model = create_model(args.preset, **kwargs)
    print(f"preset: {args.preset}")
    print(format_summary(model, summarize(model)))
    return 0


def _cmd_model_list(_: argparse.Namespace) -> int:
    from .model import list_fusion_blocks, list_presets

    print("presets:", ", ".join(list_presets()))
    print("fusion blocks:", ", ".join(list_fusion_blocks()))
    return 0


# --- train ------------------------------------------------------------------------------


def _print_epoch(total: int):
    def show(record: Any) -> None:
        print(
            f"epoch {record.epoch:>3}/{total}  train loss {record.train_loss:.4f} acc {record.train_score:.3f}  "
            f"val loss {record.val_loss:.4f} score {record.val_score:.3f} wF1 {record.val_weighted_f1:.3f}  "
            f"({record.seconds:.1f} s)",
            flush=True,
        )

    return show


def _print_result(result: Any, out_dir: Path | None) -> None:
    if result.status != "completed":
        print(f"run {result.status}: {result.error}")
    if result.best_epoch is not None:
        print(
            f"best epoch {result.best_epoch} (chosen on validation): val score {result.val['score']:.3f}, "
            f"test score {result.test['score']:.3f}, test weighted F1 {result.test['weighted_f1']:.3f}"
        )
        for name, score in result.test_missing_modality.items():
            print(f"  test score with {name} missing: {score:.3f}")
        if result.test_ms_per_sample is not None:
            print(f"  test latency: {result.test_ms_per_sample:.3f} ms per sample (the model's forward passes)")
    print(f"parameters: {result.num_parameters:,} ({result.trainable_parameters:,} trainable); {result.seconds:.1f} s")
    if out_dir:
        print(f"results: {out_dir / RESULT_FILE}")


def _check_resumable(out_dir: Path | None, on_ray: bool) -> None:
    """``--resume`` needs an earlier run's checkpoint in ``--out``: silently starting afresh
    would hide a mistyped folder."""
    if out_dir is None:
        raise ConfigError("--resume continues the run in --out DIR, but no --out was given")
    found = out_dir / TRAIN_DIR if on_ray else out_dir / CHECKPOINTS_DIR / LAST_CHECKPOINT
    if not found.exists():
        raise ConfigError(f"--resume: {found} does not exist, so there is no run to continue; drop --resume to start one")


TRAIN_EXPERIMENT = "tacfn-train"
"""The MLflow experiment and W&B project of ``tacfn train`` runs (a config's loggers may name another)."""


def _train_trackers(loggers: Any, source: str, out_dir: Path | None) -> list[Any]:
    """The trackers a train config's ``loggers`` names, checked: installed, and with a place to log."""
    from .trackers._schema import check_installed, parse_trackers, with_destinations

    trackers = parse_trackers(loggers, source)
    check_installed(trackers, "loggers")
    return with_destinations(trackers, out_dir, TRAIN_EXPERIMENT, "loggers")


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_yaml, parse_run_config
    from .training import check_new_run_folder, train

    data = load_yaml(Path(args.config)) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{args.config}: expected a mapping of sections (model, data, train)")
    loggers = data.pop("loggers", None)  # beside the run config's sections: not part of the run
    for assignment in args.set or []:
        _set_override(data, assignment)
    cfg = parse_run_config(data, str(args.config))
    out_dir = Path(args.out) if args.out else None
    trackers = _train_trackers(loggers, str(args.config), out_dir)
    if args.workers < 1:
        raise ConfigError(f"`--workers >= 1` must hold, but got --workers {args.workers}")
    on_ray = args.workers > 1 or args.gpu or args.address is not None  # else: in this process
    if on_ray and out_dir is None:
        raise ConfigError("Ray Train runs (--workers N, --gpu, --address) need --out DIR: the workers checkpoint there")
    if args.resume:
        _check_resumable(out_dir, on_ray)
    elif out_dir is not None:
        check_new_run_folder(out_dir)  # here too for Ray Train runs, before Ray starts
    where = f" on {args.workers} Ray Train worker{'s' if args.workers > 1 else ''}" if on_ray else ""
    print(f"training {cfg.model.preset} / {cfg.model.fusion.get('name', 'preset fusion')} for {cfg.train.epochs} epochs{where}", flush=True)
    from .trackers._content import run_info
    from .trackers._writers import RunTrackers

    show = _print_epoch(cfg.train.epochs)
    with RunTrackers(trackers, run_info(cfg, out_dir.name if out_dir else Path(args.config).stem)) as tracked:

        def on_epoch(record: Any) -> None:
            show(record)
            tracked.on_epoch(record)

        if on_ray:
            from .search import check_local_capacity, init_ray, run_distributed

            if args.address is None:  # a local runtime: a CPU per worker, and a GPU each with --gpu
                option = f"--workers {args.workers}{' --gpu' if args.gpu else ''}"
                check_local_capacity(1, 1 if args.gpu else 0, option, workers=args.workers, needs="the run")
            init_ray(args.address, dashboard=True)
            result = run_distributed(
                cfg, workers=args.workers, use_gpu=args.gpu, out_dir=out_dir, resume=args.resume, on_epoch=on_epoch, progress=True
            )
        else:
            result = train(cfg, out_dir=out_dir, on_epoch=on_epoch, resume=args.resume, progress=True)
        tracked.end(result)
    _print_result(result, out_dir)
    return 0 if result.status == "completed" else EXIT_FAILED


# --- search ------------------------------------------------------------------------------


def _space_spec(space: str, assignments: Sequence[str] | None) -> SearchSpec:
    """The search space SPACE names (a file or a shipped name), with ``--set`` applied to its base."""
    from .config import load_yaml
    from .search import find_space, parse_space

    path = find_space(space)
    return parse_space(_with_base_sets(load_yaml(path), assignments, str(path)), str(path))


def _old_resume_spelling(args: argparse.Namespace) -> None:
    """``search --resume DIR``, from before ``--resume`` was a flag, read as ``--out DIR --resume``."""
    if not isinstance(args.resume, str):
        return
    if args.out:
        raise ConfigError(f"--resume {args.resume} and --out {args.out}: name the folder once, as --out DIR --resume")
    _note("--resume DIR is now --out DIR --resume")
    args.out, args.resume = args.resume, True


def _check_base_unchanged(base: dict[str, Any], assignments: Sequence[str], out: Path | str) -> None:
    """A resumed search keeps the base it was started with: a ``--set`` may repeat it, not change it."""
    for assignment in assignments:
        changed = copy.deepcopy(base)
        _set_override(changed, assignment)
        if changed != base:
            key = assignment.partition("=")[0]
            raise ConfigError(
                f"--set {assignment}: the search in {out} was started with another {key}, and a resumed "
                "search keeps its base; drop --set, or start a new search in another --out"
            )


def _resumed_search(args: argparse.Namespace) -> tuple[SearchSpec, Path | str]:
    """The spec and folder of the search ``--out DIR --resume`` continues, read from its
    ``experiment.json``; a SPACE or ``--set`` given too must say what it was started with."""
    from .search import experiment_spec, parse_space
    from .store import EXPERIMENT_FILE, ExperimentStore

    given = _space_spec(args.space, args.set) if args.space else None
    if args.out is not None:
        folder = args.out
    elif given is not None:
        folder = Path("runs") / given.name
    else:
        raise ConfigError("--resume continues the search in --out DIR, but no --out was given")
    store = ExperimentStore.open(folder)  # one-line errors: not an experiment, corrupt, newer schema
    out = store.root
    if store.kind != "search":
        raise ConfigError(f"--resume {out}: this folder holds an experiment of kind {store.kind!r}, not a search")
    stored = store.experiment["spec"]
    if args.trials is not None:
        raise ConfigError(f"--trials: a resumed search runs the {stored['search']['trials']} trials it was started with; drop --trials")
    _check_base_unchanged(stored["base"], args.set or [], out)
    recorded = parse_space(stored, str(store.location.child(EXPERIMENT_FILE)))
    if given is not None:
        described = experiment_spec(given, given.search.model_copy(update={"trials": stored["search"]["trials"]}))
        # with its defaults filled in: a folder from before a setting (search.sampler) ran with its default
        stored = {**stored, "search": experiment_spec(recorded)["search"]}
        differ = sorted(key for key in described.keys() | stored.keys() if described.get(key) != stored.get(key))
        if differ:
            raise ConfigError(f"{args.space}: differs from the search in {out} (in {differ}); drop SPACE to continue that search, or use another --out")
    return recorded, out


def _new_search(args: argparse.Namespace) -> tuple[SearchSpec, Path | str]:
    """The spec and folder of a new search: SPACE with ``--set``, into a folder holding no experiment."""
    from .store import EXPERIMENT_FILE, Location

    if not args.space:
        raise ConfigError("give a SPACE file or name, or --out DIR --resume to continue a search")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"`--trials >= 1` must hold, but got --trials {args.trials}")
    spec = _space_spec(args.space, args.set)
    location = Location(args.out or Path("runs") / spec.name)
    if location.exists(EXPERIMENT_FILE):
        raise ConfigError(f"{location.root} already holds an experiment; add --resume to continue it, or use another --out")
    return spec, location.root


def _cmd_search(args: argparse.Namespace) -> int:
    from .search import run_search
    from .store import EXPERIMENT_FILE, Location

    _old_resume_spelling(args)
    spec, out = _resumed_search(args) if args.resume else _new_search(args)
    try:
        summary = run_search(spec, out, address=args.address, resume=bool(args.resume), trials=args.trials)
    except KeyboardInterrupt as err:  # before Tune runs (Ray starting, say) it carries no hint
        if str(err) or not Location(out).exists(EXPERIMENT_FILE):
            raise
        raise KeyboardInterrupt(f"continue with tacfn search --out {out} --resume") from None
    print()
    if summary.best_trial is None:
        print(f"no trial completed; results: {summary.path}")
        return EXIT_FAILED
    if summary.test_interval is not None:  # seed-aware: a configuration over its replicates
        low, high = summary.test_interval
        print(f"best configuration (first replicate {summary.best_trial}): validation {summary.metric} "
              f"{summary.aggregate} {summary.val_metric:.3f}, test mean {summary.test_score:.3f} [{low:.3f}, {high:.3f}] "
              f"(95% interval over {summary.replicates} replicates, each scored once)")
    else:
        chosen_on = "" if summary.metric == "val_score" else f"{summary.metric} {summary.val_metric:.3f}, score "
        print(f"best trial {summary.best_trial}: validation {chosen_on}{summary.val_score:.3f}, "
              f"test {summary.test_score:.3f} (scored once)")
    for key, value in sorted(summary.best_params.items()):
        print(f"  {key} = {value}")
    print(f"results: {summary.path}")
    return 0


def _check_plan_to_resume(out: Path | str) -> None:
    """``ablate --resume`` needs a plan in ``--out``: silently starting one would hide a mistyped folder."""
    from .store import EXPERIMENT_FILE, ExperimentStore, Location

    if not Location(out).exists(EXPERIMENT_FILE):
        raise ConfigError(f"--resume: {out} holds no ablation to continue (no {EXPERIMENT_FILE}); drop --resume to start one")
    store = ExperimentStore.open(out)
    if store.kind != "ablation":
        raise ConfigError(f"--resume {out}: this folder holds an experiment of kind {store.kind!r}, not an ablation")


def _cmd_ablate(args: argparse.Namespace) -> int:
    from dashboards import format_ablation_table, load_experiment

    from .config import load_yaml
    from .search import find_plan, parse_plan, run_ablation
    from .store import absolute_root

    path = find_plan(args.plan)
    plan = parse_plan(_with_base_sets(load_yaml(path), args.set, str(path)), str(path))
    out = absolute_root(args.out or Path("runs") / plan.name)
    if args.resume:
        _check_plan_to_resume(out)
    run_ablation(plan, out, address=args.address)  # without --resume too, a plan in `out` is continued
    print()
    exp = load_experiment(out)  # the dashboard's own table: the page shows the same numbers
    if not exp.completed.height:
        print(f"no run completed; results: {out}")
        return EXIT_FAILED
    print(format_ablation_table(exp))
    print(f"results: {out}")
    return 0


# --- demo and dashboard -----------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), trials=args.trials)
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .store import EXPERIMENT_FILE, Location

    dirs = [Location(d).root for d in args.dirs]  # a local Path, or a URI such as s3://bucket/prefix
    if len(dirs) == 1 and isinstance(dirs[0], Path) and (dirs[0] / RESULT_FILE).exists() and not (dirs[0] / EXPERIMENT_FILE).exists():
        from dashboards.run_report import write_run_report  # one `tacfn train` run

        if args.serve:
            raise ConfigError(f"--serve shows a search or ablation folder; {dirs[0]} is one `tacfn train` run (drop --serve for its report)")
        print(f"dashboard: {write_run_report(dirs[0], Path(args.out) if args.out else None, on_gap=_note)}")
        return 0
    if args.serve:
        from dashboards import serve

        if len(dirs) != 1:
            raise ConfigError("--serve shows one experiment folder at a time")
        serve(dirs[0], host=args.host, port=args.port)
        return 0
    from dashboards import write_dashboard
    from dashboards._loading import load_whole_experiment

    for folder in dirs:  # without its trials the page would show a problem in place of the data: refuse
        load_whole_experiment(folder, "no dashboard written")
    print(f"dashboard: {write_dashboard(dirs, Path(args.out) if args.out else None, on_gap=_note)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dashboards.report import write_report

    report = write_report(args.dirs, args.out, figures=not args.no_figures, on_note=_note)
    print(f"report: {len(report.files)} files in {report.folder}")
    for name in report.files:
        print(f"  {name}")
    return 0


def _cmd_store_compact(args: argparse.Namespace) -> int:
    from .store import ExperimentStore

    for folder in args.dirs:
        store = ExperimentStore.open(folder)
        done = store.compact()
        print(f"{store.root}: {'compacted into trials.parquet, epochs.parquet and predictions.parquet' if done else 'nothing to compact'}")
    return 0


GRAMMAR = """\
conventions:
  --out DIR        the folder a command writes (search and ablate default to runs/NAME)
  --resume         a flag: continue the work in --out DIR (train, search, ablate); it is
                   an error when that folder holds nothing to continue
  --set KEY=VALUE  repeatable: override a dotted key of the run config (train) or of the
                   space's or plan's base (search, ablate); values are read as YAML
  --workers N      Ray Train workers, DDP ranks (train)
  --jobs N, -j N   local processes (data prepare)

exit status:
  0    done
  1    a run failed or no trial completed; or a bug in tacfn (a traceback, please report it)
  2    bad input or usage: one line on stderr saying what to fix
       (TACFN_DEBUG=1: any error propagates with Python's traceback)
  130  interrupted (Ctrl-C); the line says how to continue
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``tacfn`` argument parser (its epilog states the grammar the commands share)."""
    parser = argparse.ArgumentParser(
        prog="tacfn",
        description="TACFN multimodal emotion recognition: data, models, training",
        epilog=GRAMMAR,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="synthesise, prepare or convert datasets").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="write a synthetic RAVDESS tree (real mp4 files)")
    p.add_argument("out_dir", help="a new or empty folder")
    p.add_argument("--actors", type=int, default=24, help="actors, 1 to 24 (default 24)")
    p.add_argument("--clips-per-actor", type=int, default=16, help="speech clips per actor, 1 to 60 (default 16)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default 0)")
    p.add_argument(
        "--effects",
        default="audio,video,cross",
        help="comma-separated effects to plant, any of audio, video, cross (default all three); "
        "a left-out effect's cue is random, so its bit cannot be read",
    )
    p.set_defaults(func=_cmd_data_synth)
    p = data.add_parser("prepare", help="decode a RAVDESS tree into an Arrow dataset")
    p.add_argument("ravdess_dir")
    p.add_argument("out_dir")
    p.add_argument("--preset", default="lite", help="model preset whose preprocessing to use (lite, paper)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="decoding processes (default: all cores)")
    p.add_argument("--workers", dest="old_workers", type=int, default=None, help=argparse.SUPPRESS)  # the old --jobs
    p.set_defaults(func=_cmd_data_prepare)
    p = data.add_parser("iemocap", help="convert MulT-format IEMOCAP features to Arrow")
    p.add_argument("src", help="a .pkl file in MulT's format (loaded as pickle because you name it)")
    p.add_argument("out_dir")
    p.set_defaults(func=_cmd_data_iemocap)

    model = sub.add_parser("model", help="inspect model presets").add_subparsers(dest="model_command", required=True)
    p = model.add_parser("info", help="architecture, shapes per stage, parameter counts")
    p.add_argument("preset")
    p.add_argument("--fusion", help="fusion block name (default: the preset's)")
    p.add_argument("--backbone", choices=("finetune", "frozen"))
    p.set_defaults(func=_cmd_model_info)
    p = model.add_parser("list", help="presets and fusion blocks")
    p.set_defaults(func=_cmd_model_list)

    p = sub.add_parser("train", help="one training run from a YAML config (in this process, or on Ray Train workers)")
    p.add_argument("config")
    p.add_argument("--out", help="folder for checkpoints and result.json")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers, DDP (default 1: train in this process)")
    p.add_argument("--gpu", action="store_true", help="one GPU per Ray Train worker (NCCL; bf16 autocast if train.amp)")
    p.add_argument("--address", help="a running Ray cluster's address (default: a local Ray runtime)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=5")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("search", help="hyperparameter search with Ray Tune + Optuna")
    p.add_argument("space", nargs="?", help="a YAML space file, or the name of a shipped one (quickstart, ...)")
    p.add_argument("--out", help="experiment folder, local or a URI such as s3://bucket/prefix (default: runs/NAME)")
    p.add_argument("--trials", type=int, help="override search.trials")
    p.add_argument("--address", help="a running Ray cluster's address (default: a local Ray runtime)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the interrupted search in OUT (its space is read from there; SPACE may be left out)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a value of the space's base, e.g. train.epochs=5; with --resume only the values it started with")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("ablate", help="run an ablation plan: variants on paired seeds and folds")
    p.add_argument("plan", help="a YAML plan file, or the name of a shipped one (ablation_fusion)")
    p.add_argument("--out", help="experiment folder, local or a URI (default: runs/NAME)")
    p.add_argument("--resume", action="store_true", help="finish the interrupted plan in OUT (a rerun without it does too)")
    p.add_argument("--address", help="a running Ray cluster's address (default: a local Ray runtime)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value of the plan's base, e.g. train.epochs=5")
    p.set_defaults(func=_cmd_ablate)

    p = sub.add_parser("demo", help="synthetic data, a quickstart search, an ablation, and their dashboard")
    p.add_argument("--out", default="tacfn-demo")
    p.add_argument("--trials", type=int, help="search trials (default: the quickstart space's)")
    p.set_defaults(func=_cmd_demo)

    store = sub.add_parser("store", help="maintain experiment folders").add_subparsers(dest="store_command", required=True)
    p = store.add_parser("compact", help="fold an experiment's record log into its three Parquet tables (a finished search does)")
    p.add_argument("dirs", nargs="+", metavar="EXP_DIR", help="experiment folders or URIs")
    p.set_defaults(func=_cmd_store_compact)

    p = sub.add_parser("dashboard", help="one offline HTML file of experiments (or of one training run), or a live view")
    p.add_argument("dirs", nargs="+", metavar="EXP_DIR", help="experiment folders or URIs (searches, ablations), or a `tacfn train --out` folder")
    p.add_argument("--out", help="HTML file to write (default: in the first folder; in this folder for a URI)")
    p.add_argument("--serve", action="store_true", help="serve a live view that follows a running search")
    p.add_argument("--host", default="127.0.0.1", help="address to bind with --serve (default: this machine only)")
    p.add_argument("--port", type=int, default=8050)
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser("report", help="paper-ready tables (Markdown, LaTeX, CSV) and figures (SVG, PNG) of experiments")
    p.add_argument("dirs", nargs="+", metavar="EXP_DIR", help="experiment folders or URIs (searches, ablations)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="local folder to write: new, one tacfn report wrote, or one of yours (no file it did not write is replaced)")
    p.add_argument("--no-figures", action="store_true", help="the tables only (the figures need kaleido and Chromium)")
    p.set_defaults(func=_cmd_report)
    return parser


_python_formatwarning = warnings.formatwarning


def _format_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """tacfn's own warnings as one line, as its errors are (not Python's file, line number
    and source excerpt); other libraries' warnings as Python prints them."""
    if category.__module__.startswith("tacfn."):
        return f"tacfn: warning: {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


# OSErrors about the user's paths and machine (a folder that is a file, no permission, a full
# disk), raised wherever tacfn opens or writes a file; any other OSError is tacfn's to explain.
USER_OS_ERRORS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
    errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT,
})


def _user_facing(err: Exception) -> bool:
    """Whether ``err`` is the user's to fix (one line, exit 2) rather than a bug in tacfn."""
    return isinstance(err, TacfnError) or (isinstance(err, OSError) and err.errno in USER_OS_ERRORS)


def _report_bug() -> int:
    """The traceback of an exception tacfn did not expect, and what to do about it."""
    traceback.print_exc()
    print(
        "tacfn: error: this is a bug in tacfn, not in what you passed; please report it to the tacfn "
        "maintainers with the command you ran and the traceback above",
        file=sys.stderr,
    )
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tacfn`` command line; returns the exit status (see ``GRAMMAR``)."""
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = _format_warning
    try:
        return args.func(args)
    except BrokenPipeError:  # the reader went away (`tacfn model info paper | head -1`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 1
    except Exception as err:
        if os.environ.get("TACFN_DEBUG"):
            raise
        if not _user_facing(err):
            return _report_bug()
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"tacfn: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as err:  # a search or ablation says how to go on
        # Files the interrupted work left open (Ray Tune's trial logs) are closed at exit: not news.
        warnings.simplefilter("ignore", ResourceWarning)
        print(f"tacfn: interrupted{f'; {err}' if str(err) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
