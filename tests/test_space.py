"""Search spaces: YAML files validate at load time, compile to a define-by-run Optuna space,
and every sampled trial is a valid run config."""

from __future__ import annotations

import math
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tacfn.config import parse_run_config
from tacfn.errors import ConfigError
from tacfn.model.fusion import get_fusion_block_class, list_fusion_blocks
from tacfn.nested import apply_overrides
from tacfn.search._space import SEARCH_SPACES_DIR, find_space, list_spaces, load_space, parse_space
from tacfn.search._samplers import create_sampler
from tacfn.search._space_compile import SearchSpace, compile_space, config_hash, grid, optuna_distributions
from tacfn.search._space_schema import SAMPLERS, SearchSpec

SHIPPED = ("quickstart", "ravdess_tacfn", "iemocap_tacfn", "modality_dropout")
LITE = {"model": {"preset": "lite", "backbone": "frozen"}, "train": {"epochs": 4}}


@pytest.fixture(autouse=True)
def _quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def _write(tmp_path: Path, data: Any, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _spec(space: dict[str, Any], base: dict[str, Any] | None = None, **search: Any) -> dict[str, Any]:
    return {"name": "test", "base": LITE if base is None else base, "space": space, "search": search}


def _study(space: SearchSpace, trials: int, seed: int = 0) -> optuna.Study:
    """A seeded TPE study whose objective rewards lr near 3e-3 and the tacfn block."""

    def objective(trial: optuna.Trial) -> float:
        space(trial)
        p = trial.params
        return -abs(math.log10(p["train.lr"]) + 2.5) + (p["model.fusion.name"] == "tacfn")

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=trials)
    return study


# --- what importing a space costs -------------------------------------------------------------

_WITHOUT_TORCH = """
import sys
from tacfn.search import AxisInfo, SearchSpec
from tacfn.search._space_compile import SearchSpace, compile_space, config_hash, grid

spec = SearchSpec.model_validate({"name": "x", "space": {
    "train.batch_size": {"choice": [8, 16]},
    "train.epochs": {"int": [2, 4], "when": {"train.batch_size": [16]}},
}})
info = compile_space(spec)
assert isinstance(info.axes[0], AxisInfo) and len(grid(info)) == 4, grid(info)
config_hash(spec.base)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray") or m.startswith("tacfn.model"))
assert not loaded, loaded
"""


def test_the_schema_and_compiled_space_need_neither_torch_nor_the_model():
    """What dashboards and other readers of a space use must not import torch (seconds of
    start-up, and not installed beside the dashboards); only checking a space against the
    run config, and compiling one that searches fusion blocks, ask the model."""
    done = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]


# --- shipped files ---------------------------------------------------------------------------


def test_shipped_spaces_are_listed_and_found_by_name():
    assert set(SHIPPED) <= set(list_spaces())
    for name in SHIPPED:
        assert find_space(name) == SEARCH_SPACES_DIR / f"{name}.yaml"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_space_loads(name: str):
    spec = load_space(find_space(name))
    assert spec.name == name
    info = compile_space(spec)
    assert [axis.key for axis in info.axes] and set(a.key for a in info.axes) == set(spec.space)
    parse_run_config(spec.base)


def test_find_space_accepts_a_path_and_lists_names_when_unknown(tmp_path: Path):
    path = _write(tmp_path, _spec({"train.lr": {"float": [1e-4, 1e-2], "log": True}}))
    assert find_space(str(path)) == path
    with pytest.raises(ConfigError, match=r"unknown search space 'nope'; valid: \[.*'quickstart'.*\]"):
        find_space("nope")
    with pytest.raises(ConfigError, match="no such search-space file"):
        find_space(tmp_path / "absent.yaml")


# --- define-by-run sampling ------------------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart() -> tuple[SearchSpec, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_space(find_space("quickstart"))
    return spec, _study(SearchSpace(compile_space(spec)), trials=100)


def test_tpe_samples_valid_run_configs(quickstart: tuple[SearchSpec, optuna.Study]):
    spec, study = quickstart
    assert len(study.trials) == 100
    for trial in study.trials:
        cfg = parse_run_config(apply_overrides(spec.base, trial.params), f"trial {trial.number}")
        p = trial.params
        assert cfg.model.fusion["name"] == p["model.fusion.name"]
        assert cfg.train.lr == p["train.lr"] and 1e-4 <= p["train.lr"] <= 1e-2
        assert p["train.batch_size"] in (8, 16, 24, 32)
        assert cfg.model.backbone == "frozen" and cfg.model.pretrain is not None and cfg.train.epochs == 20  # from the base
        assert ("model.fusion.attended_pool" in p) == (p["model.fusion.name"] == "tacfn")


def test_fusion_options_are_sampled_only_for_blocks_that_read_them(quickstart: tuple[SearchSpec, optuna.Study]):
    _, study = quickstart
    names = {t.params["model.fusion.name"] for t in study.trials}
    assert {"tacfn", "concat"} <= names  # both kinds of block were sampled
    for trial in study.trials:
        name = trial.params["model.fusion.name"]
        assert ("model.fusion.heads" in trial.params) == ("heads" in get_fusion_block_class(name).options)
        assert ("model.fusion.selection" in trial.params) == (name == "tacfn")
        assert ("model.fusion.layers" in trial.params) == (name == "tacfn")
        assert ("model.fusion.dim" in trial.params) == (name in ("tfn", "lmf"))
        assert ("model.fusion.rank" in trial.params) == (name == "lmf")


def test_a_space_over_every_block_samples_each_option_only_for_the_blocks_that_read_it():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"heads": {"choice": [1, 2, 4]}, "layers": {"int": [1, 3]}, "attended_pool": {"choice": ["mean", "separate"]},
               "dim": {"int": [4, 8]}, "rank": {"int": [1, 4]}, "head_dropout": {"float": [0.0, 0.5]}}
    space = {"model.fusion.name": {"choice": list_fusion_blocks()}} | {f"model.fusion.{k}": v for k, v in options.items()}
    spec = parse_space(_spec(space, base={"model": {"preset": "lite"}}))
    sample = SearchSpace(compile_space(spec))

    def objective(trial: optuna.Trial) -> float:
        sample(trial)
        return 0.0

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=60)
    assert {t.params["model.fusion.name"] for t in study.trials} == set(list_fusion_blocks())
    for trial in study.trials:
        reads = get_fusion_block_class(trial.params["model.fusion.name"]).options
        assert {k for k in options if f"model.fusion.{k}" in trial.params} == set(options) & set(reads), trial.params
        parse_run_config(apply_overrides(spec.base, trial.params), f"trial {trial.number}")


def test_study_is_reproducible_with_a_seed():
    info = compile_space(load_space(find_space("quickstart")))
    first = [t.params for t in _study(SearchSpace(info), trials=15, seed=3).trials]
    again = [t.params for t in _study(SearchSpace(info), trials=15, seed=3).trials]
    other = [t.params for t in _study(SearchSpace(info), trials=15, seed=4).trials]
    assert first == again
    assert first != other


# --- samplers --------------------------------------------------------------------------------

SAMPLER_CLASSES = {
    "tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler, "cmaes": optuna.samplers.CmaEsSampler,
    "random": optuna.samplers.RandomSampler, "qmc": optuna.samplers.QMCSampler, "nsga2": optuna.samplers.NSGAIISampler,
}
# Every trial samples every axis: a space each sampler can search.
FIXED_AXES = {
    "model.fusion.name": {"choice": ["tacfn", "concat"]},
    "model.modality_dropout.audio": {"float": [0.0, 0.5]},
    "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True},
    "train.batch_size": {"int": [8, 32], "step": 8},
}


def _sampled(spec: SearchSpec, seed: int, trials: int) -> list[dict[str, Any]]:
    """The params of ``trials`` trials of a study with ``spec``'s sampler seeded with ``seed``,
    on an objective (two, with objectives) that rewards lr near 3e-3 and the tacfn block."""
    sample = SearchSpace(compile_space(spec))

    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        sample(trial)
        p = trial.params
        score = -abs(math.log10(p["train.lr"]) + 2.5) + (p["model.fusion.name"] == "tacfn")
        return (score, p.get("model.modality_dropout.audio", 0.0)) if spec.search.objectives else score

    sampler = create_sampler(spec.search.model_copy(update={"seed": seed}))
    assert isinstance(sampler, SAMPLER_CLASSES[spec.search.sampler])
    directions = ["maximize", *["minimize"] * len(spec.search.objectives)]
    study = optuna.create_study(directions=directions, sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_is_the_optuna_sampler_it_names_seeded_by_the_search_seed(name: str):
    """12 trials: past TPE's and GP's 10 random start-up trials, and CMA-ES's and QMC's first;
    the seed decides the last too (QMC's sequence is scrambled by it)."""
    objectives = ["num_parameters"] if name == "nsga2" else []
    spec = parse_space(_spec(FIXED_AXES, base={"model": {"preset": "lite"}}, sampler=name, objectives=objectives, scheduler="none"))
    first = _sampled(spec, seed=3, trials=12)
    assert first == _sampled(spec, seed=3, trials=12)
    assert first[-1] != _sampled(spec, seed=4, trials=12)[-1]


@pytest.mark.parametrize(("name", "objectives"), [("gp", []), ("random", []), ("tpe", ["num_parameters"]), ("nsga2", ["num_parameters"])])
def test_samplers_that_take_conditional_spaces_sample_each_option_only_for_the_blocks_that_read_it(name: str, objectives: list[str]):
    spec = load_space(find_space("quickstart"))
    spec = spec.model_copy(update={"search": spec.search.model_copy(update={"sampler": name, "objectives": objectives})})
    for params in _sampled(spec, seed=0, trials=14):
        block = get_fusion_block_class(params["model.fusion.name"])
        assert ("model.fusion.heads" in params) == ("heads" in block.options)
        assert ("model.fusion.selection" in params) == ("selection" in block.options)
        parse_run_config(apply_overrides(spec.base, params), "trial")


def test_search_space_pickles_and_samples_the_same_after_a_round_trip():
    space = SearchSpace(compile_space(load_space(find_space("quickstart"))))
    restored = pickle.loads(pickle.dumps(space))
    assert restored.info == space.info
    assert [t.params for t in _study(restored, 12).trials] == [t.params for t in _study(space, 12).trials]


def test_when_conditions_chain_and_order_parents_first(tmp_path: Path):
    # layers is written first but depends on selection, which depends on the block name
    spec = load_space(_write(tmp_path, _spec({
        "model.fusion.layers": {"int": [1, 2], "when": {"model.fusion.selection": ["transformer"]}},
        "model.fusion.selection": {"choice": ["transformer", "mean"], "when": {"model.fusion.name": ["tacfn"]}},
        "model.fusion.name": {"choice": ["tacfn", "concat"]},
    })))
    info = compile_space(spec)
    assert [a.key for a in info.axes] == ["model.fusion.name", "model.fusion.selection", "model.fusion.layers"]
    combos = grid(info)
    for params in combos:
        chosen = params.get("model.fusion.selection")
        assert ("model.fusion.selection" in params) == (params["model.fusion.name"] == "tacfn")
        assert ("model.fusion.layers" in params) == (chosen == "transformer")
    # tacfn x transformer x 2 layers, tacfn x mean, concat
    assert len(combos) == 4


# --- grid and distributions ------------------------------------------------------------------


def test_grid_covers_every_finite_combination_once(tmp_path: Path):
    spec = load_space(_write(tmp_path, _spec({
        "model.fusion.name": {"choice": ["tacfn", "concat", "late_average"]},
        "model.fusion.heads": {"choice": [2, 4]},
        "train.batch_size": {"int": [8, 24], "step": 8},
    })))
    combos = grid(compile_space(spec))
    # heads only for tacfn: (2 + 1 + 1) block settings x 3 batch sizes
    assert len(combos) == (2 + 1 + 1) * 3
    assert len({tuple(sorted(c.items())) for c in combos}) == len(combos)
    assert {c["train.batch_size"] for c in combos} == {8, 16, 24}


def test_grid_of_a_float_axis_fails():
    info = compile_space(load_space(find_space("quickstart")))
    with pytest.raises(ConfigError, match=r"space\.model\.modality_dropout\.audio: the grid needs finite axes"):
        grid(info)


def test_grid_points_are_valid_optuna_trials(tmp_path: Path):
    spec = load_space(_write(tmp_path, _spec({
        "model.fusion.name": {"choice": ["tacfn", "concat"]},
        "model.fusion.heads": {"choice": [2, 4]},
        "model.fusion.layers": {"int": [1, 3], "when": {"model.fusion.name": ["tacfn"]}},
    })))
    info = compile_space(spec)
    dists = optuna_distributions(info)
    assert isinstance(dists["model.fusion.layers"], optuna.distributions.IntDistribution)
    study = optuna.create_study()
    for params in grid(info):
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params}, value=0.0))
    assert len(study.trials) == 2 * 3 + 1


# --- run configs from params -----------------------------------------------------------------


def test_config_hash_pairs_seeds_and_folds_but_not_settings():
    cfg = {"model": {"preset": "lite"}, "data": {"fold": 0}, "train": {"lr": 0.001, "seed": 0}}
    key = config_hash(cfg)
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert config_hash(apply_overrides(cfg, {"train.seed": 7, "data.fold": 3})) == key
    assert config_hash({"train": {"seed": 1, "lr": 0.001}, "model": {"preset": "lite"}}) == key
    assert config_hash(apply_overrides(cfg, {"train.lr": 0.002})) != key
    assert config_hash(apply_overrides(cfg, {"data.synthetic.seed": 1})) != key


def test_config_hash_is_stable_and_ignores_empty_mappings():
    # Stores written earlier pair their runs on these keys: the hash of a config must not change.
    assert config_hash({"model": {"preset": "lite"}, "train": {"lr": 0.001}}) == "c79cad8a1b594c5a"
    with_empty = {"model": {"preset": "lite", "fusion": {}, "x": {"y": {}}}, "train": {"lr": 0.001, "seed": 3}}
    assert config_hash(with_empty) == "c79cad8a1b594c5a"


# --- bad spaces ------------------------------------------------------------------------------

BAD_SPACES = [
    (_spec({"train.lr": {"float": [0.1, 0.001]}}),
     r"space\.train\.lr: `low <= high` must hold, but got \(low=0\.1, high=0\.001\)"),
    (_spec({"train.lr": {"float": [0.0, 0.1], "log": True}}),
     r"space\.train\.lr: `low > 0` must hold for a log range"),
    (_spec({"model.fusion.name": {"choice": []}}), r"space\.model\.fusion\.name: empty choice list"),
    (_spec({"train.lr": {"float": [0.1, 0.2], "stpe": 0.1}}), r"space\.train\.lr\.stpe: unknown key; valid: \["),
    (_spec({"model.fusion.colour": {"choice": ["red"]}}),
     r"space\.model\.fusion\.colour: unknown fusion option; valid: \[.*'heads'"),
    (_spec({"train.lrr": {"float": [0.1, 0.2]}}), r"space\.train\.lrr: unknown or not searchable train option"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "transfusion"]}}),
     r"space\.model\.fusion\.name: unknown fusion block 'transfusion'; valid: \["),
    (_spec({"train.epochs": {"int": [-1, 3]}}),
     r"space\.train\.epochs: range end -1 gives an invalid run config: train\.epochs"),
    (_spec({"model.modality_dropout.audio": {"float": [0.0, 1.0]}}),
     r"space\.model\.modality_dropout\.audio: range end 1\.0 gives an invalid run config"),
    (_spec({"model.fusion.heads": {"choice": [2, 3]}}),
     r"space\.model\.fusion\.heads: `heads` must divide `d`.*\(heads=3, d=64\)"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "concat"]}, "model.fusion.d": {"choice": [32, 30]}}),
     r"space\.model\.fusion\.d: `heads` must divide `d`.*\(heads=4, d=30\)"),
    (_spec({"model.fusion.selection": {"choice": ["mean"], "when": {"model.fusion.name": ["tacfn"]}}}),
     r"space\.model\.fusion\.selection\.when\.model\.fusion\.name: this space has no other axis"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "concat"]},
            "model.fusion.selection": {"choice": ["mean"], "when": {"model.fusion.name": ["mult"]}}}),
     r"space\.model\.fusion\.selection\.when\.model\.fusion\.name: 'mult' is not a value"),
    (_spec({"model.fusion.layers": {"int": [1, 3], "when": {"model.fusion.heads": [2]}},
            "model.fusion.heads": {"choice": [2, 4], "when": {"model.fusion.layers": [1]}}}),
     r"space\.model\.fusion\.layers: `when` conditions form a cycle"),
    (_spec({"model.fusion.name": {"choice": ["concat", "late_average"]}, "model.fusion.heads": {"choice": [2]}}),
     r"space\.model\.fusion\.heads: no block it can be sampled with \(\['concat', 'late_average'\]\) reads heads"),
    (_spec({"model.fusion.rank": {"int": [1, 4]}}),
     r"space\.model\.fusion\.rank: block 'tacfn' does not read rank, so it never matters; it reads \["),
    (_spec({"model.fusion.name": {"choice": ["tfn", "lmf"]},
            "model.fusion.rank": {"int": [1, 4], "when": {"model.fusion.name": ["tfn", "lmf"]}}}),
     r"space\.model\.fusion\.rank\.when\.model\.fusion\.name: block\(s\) \['tfn'\] do not read rank"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "concat"]}},
           base={"model": {"preset": "lite", "fusion": {"attended_pool": "separate"}}}),
     r"space\.model\.fusion\.name: choice 'concat' gives an invalid run config: model: fusion block 'concat' "
     r"does not read option 'attended_pool'"),
    (_spec({"train.lr": {"choice": ["1e-4", 1.0e-3]}}),
     r"space\.train\.lr: choice '1e-4' is not a number.*YAML reads 1e-4 as a string"),
    (_spec({"train.batch_size": {"float": [8, 32]}}), r"space\.train\.batch_size: a `float` range needs"),
    (_spec({"train.optimizer": {"choice": ["adam", "lbfgs"]}}),
     r"space\.train\.optimizer: choice 'lbfgs' gives an invalid run config: train\.optimizer: Input should be"),
    (_spec({"model.preset": {"choice": ["lite", "paper"]}}), r"space\.model\.preset: not searchable"),
    (_spec({"model.modality_dropout.text": {"float": [0.0, 0.5]}}),
     r"space\.model\.modality_dropout\.text: unknown modality; valid: \['video', 'audio'\]"),
    (_spec({"train.lr": 0.01}), r"space\.train\.lr: an axis is a mapping"),
    (_spec({"train.batch_size": {"int": [8, 30], "step": 8}}),
     r"space\.train\.batch_size: `high - low` must be a multiple of `step`"),
    (_spec({"train.lr": {"float": [0.1, 0.2], "int": [1, 2]}}), r"space\.train\.lr: exactly one of"),
    (_spec({"model.fusion.name": {"choice": ["concat", "tacfn"]}, "model.fusion.heads": {"choice": [2]},
            "model.fusion.direction": {"choice": ["video->text"]}},
           base={"model": {"preset": "lite", "fusion": {"name": "concat"}}}),
     r"space\.model\.fusion\.direction: choice 'video->text' gives an invalid run config "
     r"\(with model\.fusion\.name='tacfn'\): model: invalid fusion direction"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, base={"train": {"optimiser": "adam"}}),
     r"base\.train\.optimiser: unknown key; valid: \[.*'optimizer'"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, asha={"grace_period": 5}),
     r"search\.asha\.grace_period: `grace_period <= train\.epochs` must hold.*\(grace_period=5, epochs=4\)"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, workers=2, resources={"gpu": 0.5}),
     r"search: workers > 1 need a whole GPU each"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, max_failures=-1),
     r"search\.max_failures: Input should be greater than or equal to 0"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, metric="val_acc"),
     r"search\.metric: Input should be 'val_score' or 'val_weighted_f1'"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, sampler="bayes"),
     r"search\.sampler: Input should be 'tpe', 'gp', 'cmaes', 'random', 'qmc' or 'nsga2'"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "concat"]}, "model.fusion.heads": {"choice": [2, 4]}}, sampler="cmaes"),
     r"search\.sampler: cmaes cannot sample conditional spaces \(model\.fusion\.heads is sampled only when "
     r"model\.fusion\.name is tacfn\); use tpe, gp or random"),
    (_spec({"train.batch_size": {"choice": [8, 16]}, "train.lr": {"float": [0.1, 0.2], "when": {"train.batch_size": [16]}}}, sampler="qmc"),
     r"search\.sampler: qmc cannot sample conditional spaces \(train\.lr is sampled only when train\.batch_size is 16\)"),
    (_spec({"model.fusion.name": {"choice": ["tacfn", "concat"]}}, sampler="cmaes"),
     r"search\.sampler: cmaes searches int and float ranges, and this space has none"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, sampler="nsga2"),
     r"search\.sampler: nsga2 searches multi-objective spaces, and this one has no search\.objectives; use tpe, gp, cmaes, random or qmc"),
    (_spec({"train.lr": {"float": [0.1, 0.2]}}, sampler="gp", objectives=["num_parameters"], scheduler="none"),
     r"search\.sampler: a multi-objective search \(search\.objectives: \['num_parameters'\]\) samples with tpe or nsga2, not gp"),
    ({**_spec({"train.lr": {"float": [0.1, 0.2]}}), "name": "my search"}, r"name: `name` must be a folder name"),
    ({**_spec({"train.lr": {"float": [0.1, 0.2]}}), "spcae": {}}, r"spcae: unknown key; valid: \["),
]


@pytest.mark.parametrize(("data", "match"), BAD_SPACES, ids=[m.split(":")[0].replace("\\", "") for _, m in BAD_SPACES])
def test_bad_space_fails_at_load_with_one_line_naming_file_and_key(tmp_path: Path, data: dict, match: str):
    path = _write(tmp_path, data, "bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert re.search(match, message), message


def test_malformed_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: q\nspace:\n  train.lr: {float: [0.1, 0.2]\nsearch: {}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML at line \d+, column \d+"):
        load_space(path)


def test_duplicate_key_is_an_error_not_silently_overwritten(tmp_path: Path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: q\nspace:\n  train.lr: {float: [0.1, 0.2]}\n  train.lr: {float: [0.3, 0.4]}\n")
    with pytest.raises(ConfigError, match=r"dup\.yaml: malformed YAML at line 4, column 3: duplicate key 'train\.lr'"):
        load_space(path)


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        "name: q\nbase: {train: {epochs: 3}}\nspace:\n"
        "  train.lr: &range {float: [0.1, 0.2], log: true}\n"
        "  train.weight_decay: {<<: *range, float: [0.0, 0.1], log: false}\n"
    )
    axes = {a.key: a for a in compile_space(load_space(path)).axes}
    assert (axes["train.lr"].low, axes["train.lr"].log) == (0.1, True)
    assert (axes["train.weight_decay"].low, axes["train.weight_decay"].log) == (0.0, False)


def test_parse_space_accepts_a_mapping_and_rejects_other_documents():
    spec = parse_space(_spec({"train.lr": {"float": [1e-4, 1e-2], "log": True}}), "inline")
    assert spec.search.metric == "val_score" and spec.space["train.lr"].log
    with pytest.raises(ConfigError, match="inline: expected a mapping"):
        parse_space(["train.lr"], "inline")
