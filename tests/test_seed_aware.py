"""Seed-aware search: the replicate arithmetic, the race, and the searcher driven as Tune drives it.

The searcher runs here without Ray: Tune only calls ``suggest`` and ``on_trial_complete``, so
the test plays Tune with planted replicate scores and reads the Optuna study back. The
search end to end, on a real Ray, is in ``test_search.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from scipy import stats

from tacfn.replicates import DIVERGED_SCORE, aggregate, interval95, racing_p_value, replicate_plan
from tacfn.search._racing import Race
from tacfn.search._seed_aware import SeedAwareOptunaSearch
from tacfn.search._space_compile import SearchSpace, compile_space
from tacfn.search._space_schema import SearchSettings, SearchSpec
from tacfn.store import ExperimentStore

BASE = {"model": {"preset": "lite"}, "train": {"epochs": 2}}


def test_the_plan_is_seed_major_and_the_aggregates_are_the_textbook_ones():
    assert replicate_plan([0, 1], [2, 3]) == [(0, 2), (0, 3), (1, 2), (1, 3)]
    scores = [0.6, 0.7, 0.95]
    assert aggregate(scores, "mean") == pytest.approx(0.75)
    sem = stats.tstd(scores) / math.sqrt(3)
    assert aggregate(scores, "lcb") == pytest.approx(0.75 - stats.t.ppf(0.95, 2) * sem)
    assert aggregate([0.4], "lcb") == 0.4 and math.isnan(aggregate([], "mean"))
    low, high = interval95(scores)
    assert low == pytest.approx(0.75 - stats.t.ppf(0.975, 2) * sem) and high == pytest.approx(0.75 + stats.t.ppf(0.975, 2) * sem)


def test_the_racing_test_is_one_sided_and_paired():
    incumbent = [0.90, 0.60, 0.80]
    worse = [0.85, 0.55, 0.74]  # 5-6 points below on every replicate: paired, clearly worse
    assert racing_p_value(worse, incumbent, "t") < 0.01
    assert racing_p_value(worse, [0.60, 0.90, 0.80], "t") > 0.1, "unpaired, the same scores are not clearly worse"
    assert racing_p_value(incumbent, worse, "t") > 0.9, "one-sided: better is never worse"
    assert racing_p_value([0.5], [0.9]) == 1.0, "one pair decides nothing"
    assert racing_p_value([0.5, 0.6], [0.519, 0.619]) == 1.0, "equal differences (a clip each, say): no spread, nothing decided"
    assert racing_p_value(worse, incumbent, "wilcoxon") == pytest.approx(0.125), "the exact signed-rank test's floor with 3 pairs"
    assert racing_p_value(worse, incumbent, "none") == 1.0


def _race(**search) -> Race:
    return Race(SearchSettings(seeds=[0, 1, 2], **search), base_seed=0, base_fold=0)


def _row(key: str, replicate: int, score: float | None, status: str = "completed", trial_id: str | None = None) -> dict:
    return {"trial_id": trial_id or f"{key}-{replicate}", "config_hash": key, "replicate": replicate, "status": status, "val_score": score}


def test_a_verdict_from_the_replicates_in():
    race = _race()
    incumbent = [_row("best", r, s) for r, s in enumerate([0.9, 0.88, 0.92])]
    confs = race.configurations([*incumbent, _row("close", 0, 0.89), _row("low", 0, 0.5), _row("low", 1, 0.52)])
    assert race.verdict(confs, "best") == "completed" and race.value(confs["best"]) == pytest.approx(0.9)
    assert race.verdict(confs, "close") is None, "one replicate: the race goes on"
    assert race.verdict(confs, "low") == "raced_out"
    assert _race(racing={"test": "none"}).verdict(confs, "low") is None, "racing off"
    # A diverged replicate counts as the worst score, and the race goes on with it.
    diverged = race.configurations([*incumbent, _row("wild", 0, None, "diverged"), _row("wild", 1, 0.95), _row("wild", 2, 0.93)])
    assert race.value(diverged["wild"]) == pytest.approx((DIVERGED_SCORE + 0.95 + 0.93) / 3)
    assert race.verdict(diverged, "wild") == "completed" and race.incumbent(diverged) is diverged["best"]
    every = race.configurations([_row("lost", r, None, "diverged") for r in range(3)])
    assert race.verdict(every, "lost") == "failed", "diverged on every seed: nothing trained"
    assert race.verdict(race.configurations([_row("crash", 0, None, "failed")]), "crash") == "failed"
    assert race.verdict(race.configurations([*incumbent, _row("cut", 0, 0.7, "pruned")]), "cut") == "pruned", "ASHA stopped a replicate"
    # Each replicate counts once: a second row of the same replicate (a rerun) is ignored.
    twice = race.configurations([_row("a", 0, 0.6), _row("a", 0, 0.99, trial_id="rerun")])
    assert race.value(twice["a"]) == 0.6 and len(twice["a"].replicates) == 1


def _searcher(tmp_path: Path, trials: int, **search) -> tuple[SeedAwareOptunaSearch, optuna.Study]:
    spec = SearchSpec.model_validate(
        {"name": "sa", "base": BASE, "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
         "search": {"trials": trials, "seeds": [0, 1, 2], "scheduler": "none", **search}}
    )
    store = ExperimentStore.create(tmp_path / "exp", "search", "sa", {"name": "sa", "search": {}})
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    searcher = SeedAwareOptunaSearch(
        space=SearchSpace(compile_space(spec)), metric="val_score", mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        storage=storage, study_name="sa", budget=trials, store=store, race=Race(spec.search, 0, 0), base=BASE,
    )
    return searcher, optuna.load_study(study_name="sa", storage=storage)


def _finished(score: float | None, status: str = "completed") -> dict:
    return {"best_val_score": score, "status": status, "finished": status != "pruned"}


def test_the_searcher_runs_each_configuration_on_every_seed_and_races_it(tmp_path: Path):
    """One slot (as concurrency 1): replicates run one after another; Optuna gets one trial
    per configuration; the second configuration, clearly worse after two seeds, is raced out
    and its third seed never runs; the third counts its diverged seed as 0."""
    searcher, study = _searcher(tmp_path, trials=3)
    planted = {0: [0.90, 0.86, 0.94], 1: [0.50, 0.47, 0.51], 2: [None, 0.95, 0.97]}
    lrs: list[float] = []  # each configuration's learning rate, in start order
    runs = []  # (configuration, seed)
    n = 0
    while (config := searcher.suggest(f"t{n + 1}")) != searcher.FINISHED:
        n += 1
        assert isinstance(config, dict) and config["data.fold"] == 0
        if config["train.lr"] not in lrs:
            lrs.append(config["train.lr"])
        runs.append((lrs.index(config["train.lr"]), config["train.seed"]))
        score = planted[runs[-1][0]][config["train.seed"]]
        searcher.on_trial_complete(f"t{n}", _finished(score, "diverged" if score is None else "completed"))
    assert runs == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2)], "configuration 1 stops after two seeds"
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.COMPLETE]
    assert trials[0].value == pytest.approx(0.9)
    assert trials[1].intermediate_values == {1: pytest.approx(0.5), 2: pytest.approx(0.485)}, "pruned with its partial aggregate"
    assert trials[2].value == pytest.approx((0.0 + 0.95 + 0.97) / 3), "a diverged seed counts 0"
    assert [t.params for t in trials] == [{"train.lr": lr} for lr in lrs]


def test_a_lower_bound_prefers_the_steady_configuration(tmp_path: Path):
    """With `aggregate: lcb`, a configuration that reads the planted bit on two seeds of three
    (mean 0.77) ranks below a steady one (mean 0.70), which the mean would rank after it."""
    searcher, study = _searcher(tmp_path, trials=2, aggregate="lcb", racing={"test": "none"})
    planted = {0: [0.95, 0.45, 0.92], 1: [0.70, 0.69, 0.71]}
    lrs: list[float] = []
    for n in range(1, 7):
        config = searcher.suggest(f"t{n}")
        assert isinstance(config, dict)
        if config["train.lr"] not in lrs:
            lrs.append(config["train.lr"])
        searcher.on_trial_complete(f"t{n}", _finished(planted[lrs.index(config["train.lr"])][config["train.seed"]]))
    assert searcher.suggest("t7") == searcher.FINISHED
    values = [t.value for t in study.get_trials()]
    assert values == [pytest.approx(aggregate(planted[0], "lcb")), pytest.approx(aggregate(planted[1], "lcb"))]
    assert values[1] > values[0] and sum(planted[0]) > sum(planted[1])


def test_replicates_run_side_by_side_once_every_configuration_has_started(tmp_path: Path):
    """Slots and a budget of two configurations: a configuration's second seed waits for its
    first (the race), so a free slot starts the next configuration; once no new configuration
    may start, the seeds left start at once."""
    searcher, _ = _searcher(tmp_path, trials=2, racing={"test": "none"})
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert isinstance(first, dict) and isinstance(second, dict)
    assert (first["train.seed"], second["train.seed"]) == (0, 0) and first["train.lr"] != second["train.lr"]
    third, fourth = searcher.suggest("t3"), searcher.suggest("t4")
    assert isinstance(third, dict) and isinstance(fourth, dict)
    assert [(c["train.lr"], c["train.seed"]) for c in (third, fourth)] == [(first["train.lr"], 1), (first["train.lr"], 2)], (
        "the budget is spent: the first configuration's other seeds start side by side"
    )
    searcher.on_trial_complete("t2", _finished(0.8))
    fifth = searcher.suggest("t5")
    assert isinstance(fifth, dict) and (fifth["train.lr"], fifth["train.seed"]) == (second["train.lr"], 1)
    for n in (1, 3, 4):
        searcher.on_trial_complete(f"t{n}", _finished(0.8))
    assert searcher.suggest("t6") is not None, "the second configuration's last seed"
    assert searcher.suggest("t7") is None, "nothing to start, but the second configuration is still running"


def test_a_study_rebuilt_from_the_store_holds_one_trial_per_configuration(tmp_path: Path):
    """The driver dies after Tune's snapshot: the store holds replicates the snapshot never
    saw, of a configuration it never saw start, and optuna.db is lost. The rebuilt study has
    one trial per configuration, told as the searcher would have (the finished one COMPLETE
    at its mean, the racing one RUNNING with its aggregate so far); the restored searcher
    takes the racing one up, runs its last seed only, and tells the rebuilt study its mean."""
    from tacfn.search._study import StudyRebuiltWarning, recover_study

    before, _ = _searcher(tmp_path, trials=2, racing={"test": "none"})
    store, race = before.store, before.race
    lrs: list[float] = []

    def run(searcher: SeedAwareOptunaSearch, trial_id: str, score: float) -> dict:
        config = searcher.suggest(trial_id)
        assert isinstance(config, dict)
        if config["train.lr"] not in lrs:
            lrs.append(config["train.lr"])
        searcher.on_trial_complete(trial_id, _finished(score))
        row = _row(_hash(config), config["train.seed"], score, trial_id=trial_id)
        store.record_trial({**row, "seed": config["train.seed"], "param.train.lr": config["train.lr"]})
        return config

    run(before, "a0", 0.8)
    before.save(str(tmp_path / "snapshot.pkl"))
    for trial_id, score in (("a1", 0.7), ("a2", 0.9), ("b0", 0.6), ("b1", 0.5)):  # recorded after the snapshot
        run(before, trial_id, score)
    (tmp_path / "optuna.db").unlink()
    info = compile_space(SearchSpec.model_validate({"name": "sa", "base": BASE, "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}}}))
    with pytest.warns(StudyRebuiltWarning, match=r"\(2 trials\)"):
        recover_study(tmp_path / "optuna.db", store.root, "sa", info, "val_score", [], race)
    study = optuna.load_study(study_name="sa", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [(t.state.name, t.params["train.lr"], t.user_attrs["tune_trial_id"]) for t in study.trials] == [
        ("COMPLETE", lrs[0], "a0"), ("RUNNING", lrs[1], "b0")
    ]
    assert study.trials[0].value == pytest.approx(0.8) and study.trials[1].intermediate_values == {2: pytest.approx(0.55)}

    after, _ = _searcher(tmp_path, trials=2, racing={"test": "none"})
    after.restore(str(tmp_path / "snapshot.pkl"))
    last = run(after, "b2", 0.7)
    assert (last["train.lr"], last["train.seed"]) == (lrs[1], 2), "only the seed the store lacks"
    assert after.suggest("next") == after.FINISHED
    study = optuna.load_study(study_name="sa", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", pytest.approx(0.8)), ("COMPLETE", pytest.approx(0.6))]


def _hash(config: dict) -> str:
    from tacfn.search._recording import configuration_hash

    return configuration_hash(BASE, {k: v for k, v in config.items() if k not in ("train.seed", "data.fold")})


def test_a_seed_aware_search_races_instead_of_asha():
    """ASHA would stop replicates on one seed's early epochs (and a configuration needs every
    replicate to pass every rung): a seed-aware search runs no scheduler unless told, and
    refuses ASHA when told."""
    assert SearchSettings(seeds=[0, 1]).scheduler == "none"
    assert SearchSettings(folds=[0, 1]).scheduler == "none"
    assert SearchSettings(seeds=[4]).scheduler == "asha", "one replicate: a search as without seeds"
    assert SearchSettings().scheduler == "asha"
    with pytest.raises(ValueError, match="races whole replicates"):
        SearchSettings(seeds=[0, 1], scheduler="asha")


def test_a_proposal_of_a_running_trial_is_not_trained_twice(tmp_path: Path):
    """Several trials at a time: a sampler proposing what a running trial trains is told
    FAIL with ``repeat_of`` and asked again, so two slots never train one configuration."""
    from tacfn.search._searcher import PrunableOptunaSearch

    spec = SearchSpec.model_validate({"name": "dup", "base": BASE, "space": {"train.lr": {"choice": [0.001, 0.002]}}, "search": {"trials": 2}})
    searcher = PrunableOptunaSearch(
        space=SearchSpace(compile_space(spec)), metric="val_score", mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        points_to_evaluate=[{"train.lr": 0.001}, {"train.lr": 0.001}],  # the second proposal repeats the first
        storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'dup.db'}"), study_name="dup", budget=2,
        store=ExperimentStore.create(tmp_path / "exp", "search", "dup", {"name": "dup", "search": {}}),
    )
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert isinstance(first, dict) and isinstance(second, dict) and first != second
    study = optuna.load_study(study_name="dup", storage=f"sqlite:///{tmp_path / 'dup.db'}")
    repeats = [t for t in study.trials if "repeat_of" in t.user_attrs]
    assert repeats and all(t.state.name == "FAIL" and t.params == first for t in repeats)


def test_when_every_proposal_repeats_a_running_trial_the_search_waits_instead_of_ending(tmp_path: Path):
    """Both points of a two-point space running, budget left: the searcher starts nothing and
    asks Optuna nothing more until a trial ends (it may fail, and its configuration may be
    proposed again); only repeats of ended trials mean the sampler has converged.

    Seen in CI: a 4-trial search on {lr 1e-3, lr 1e30} at concurrency 2 ended after 2 trials,
    for the two running trials' repeats were taken for convergence."""
    from tacfn.search._searcher import CONVERGED, PrunableOptunaSearch

    spec = SearchSpec.model_validate({"name": "wait", "base": BASE, "space": {"train.lr": {"choice": [0.001, 0.002]}}, "search": {"trials": 4}})
    storage = f"sqlite:///{tmp_path / 'wait.db'}"
    searcher = PrunableOptunaSearch(
        space=SearchSpace(compile_space(spec)), metric="val_score", mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        storage=optuna.storages.RDBStorage(storage), study_name="wait", budget=4,
        store=ExperimentStore.create(tmp_path / "exp", "search", "wait", {"name": "wait", "search": {}}),
    )
    first, second = searcher.suggest("t1"), searcher.suggest("t2")
    assert isinstance(first, dict) and isinstance(second, dict) and first != second
    assert searcher.suggest("t3") is None, "wait for a running trial, do not end the search"
    asked = len(optuna.load_study(study_name="wait", storage=storage).trials)
    assert searcher.suggest("t3") is None
    assert len(optuna.load_study(study_name="wait", storage=storage).trials) == asked, "no new proposals while nothing ended"

    searcher.on_trial_complete("t1", {"val_score": 0.0, "finished": False, "status": "diverged"})
    assert searcher.suggest("t3") == first, "a failed configuration is tried again"
    for trial_id in ("t2", "t3"):
        searcher.on_trial_complete(trial_id, {"val_score": 0.5, "best_val_score": 0.5, "finished": True, "status": "completed"})
    assert searcher.suggest("t4") == searcher.FINISHED, "every proposal repeats an ended trial: converged"
    assert optuna.load_study(study_name="wait", storage=storage).user_attrs[CONVERGED] is True
    assert searcher.suggest("t5") == searcher.FINISHED
