"""A seed-aware search's views: configurations ranked by the aggregate of their replicates.

The store (``write_seed_aware_store``) trains each configuration on three seeds: a planted
best one (chosen, tested on every replicate), a steady one and one with the same mean far
apart (lcb tells them apart), one that racing stopped after one replicate, one with a
diverged replicate, one with a replicate ASHA stopped and one with a failed replicate. The
expected numbers are worked out here from the rows with :mod:`tacfn.replicates`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl
import pytest
from _stores import SEED_AWARE, SEED_AWARE_BEST, SEED_AWARE_TESTS, write_search_store, write_seed_aware_store

import dashboards
from dashboards._configurations import config_status, configurations
from dashboards._history import _get_history_info
from dashboards._page import build_sections
from dashboards._parallel import _get_parallel_info
from dashboards._replicates import ReplicatesInfo, _get_replicates_info
from tacfn.replicates import DIVERGED_SCORE, aggregate, interval95, spread

RACED, DIVERGED, ASHA, FAILED = 3, 4, 6, 7  # indices in SEED_AWARE
RANKED = {"mean": [SEED_AWARE_BEST, 1, 0, 5, FAILED, RACED, ASHA, DIVERGED], "lcb": [SEED_AWARE_BEST, 1, 5, 0, FAILED, RACED, ASHA, DIVERGED]}


@pytest.fixture(scope="module", params=["mean", "lcb"])
def seeds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dashboards.Experiment:
    root = write_seed_aware_store(tmp_path_factory.mktemp(request.param) / "seeds", aggregate=request.param)
    return dashboards.load_experiment(root)


def _index(fusion: str, lr: float) -> int:
    """A configuration's place in SEED_AWARE, by its block and learning rate (unique there)."""
    return next(i for i, (sampled, _, _) in enumerate(SEED_AWARE) if (sampled["model.fusion.name"], sampled["train.lr"]) == (fusion, lr))


def _indices(board: pl.DataFrame) -> list[int]:
    return [_index(f, lr) for f, lr in board.select("param.model.fusion.name", "param.train.lr").iter_rows()]


def _hashes(exp: dashboards.Experiment) -> dict[int, str]:
    """SEED_AWARE index -> config_hash, from the replicate rows."""
    rows = exp.trials.select("param.model.fusion.name", "param.train.lr", "config_hash").unique()
    return {_index(f, lr): h for f, lr, h in rows.iter_rows()}


def _expected(exp: dashboards.Experiment, config_hash: str) -> list[float]:
    """What the aggregate counts, worked out from the rows: completed and pruned scores, 0 for diverged."""
    rows = exp.trials.filter(pl.col("config_hash") == config_hash).sort("replicate")
    return [
        DIVERGED_SCORE if s == "diverged" else v
        for s, v in rows.select("status", "val_score").iter_rows()
        if s in ("completed", "pruned", "diverged")
    ]


def test_configurations_rank_by_their_aggregate_completed_first(seeds: dashboards.Experiment) -> None:
    how = seeds.spec["search"]["aggregate"]
    board = dashboards.configuration_leaderboard(seeds)
    assert _indices(board) == RANKED[how] and board["rank"].to_list() == list(range(1, 9))
    assert [c for c in board.columns if not c.startswith("param.")] == [
        *("rank", "config_hash", f"val_score_{how}", "val_score_std", "replicates", "status"),
        *("test_mean", "test_low", "test_high"),
    ]
    assert _indices(dashboards.configuration_leaderboard(seeds, top_k=3)) == RANKED[how][:3]
    header = dashboards.plot_configuration_leaderboard(seeds).data[0].header.values
    assert f"val_score {how}" in header and "fusion" in header and "lr" in header


def test_each_aggregate_is_the_replicates_arithmetic_of_the_rows(seeds: dashboards.Experiment) -> None:
    how = seeds.spec["search"]["aggregate"]
    board = dashboards.configuration_leaderboard(seeds)
    for config_hash, value, std, replicates in board.select("config_hash", f"val_score_{how}", "val_score_std", "replicates").iter_rows():
        scores = _expected(seeds, config_hash)
        assert value == pytest.approx(aggregate(scores, how)) and std == pytest.approx(spread(scores))
        assert replicates == f"{len(scores)}/3"
    if how == "lcb":  # the same mean, far apart: lcb ranks it below the steadier late_average
        mult, late = (board.filter(pl.col("config_hash") == _hashes(seeds)[i]) for i in (0, 5))
        assert aggregate([0.70, 0.50, 0.55]) > aggregate([0.55, 0.56, 0.57]) and mult["rank"][0] > late["rank"][0]


def test_statuses_say_how_each_configuration_ended(seeds: dashboards.Experiment) -> None:
    board = dashboards.configuration_leaderboard(seeds)
    status = dict(zip(_indices(board), board["status"]))
    assert status == {
        **{i: "completed" for i in (0, 1, SEED_AWARE_BEST, 5)},
        RACED: "pruned after 1",
        DIVERGED: "pruned after 2",
        ASHA: "pruned after 2",
        FAILED: "failed",
    }
    diverged = board.filter(pl.col("config_hash") == _hashes(seeds)[DIVERGED])
    assert diverged["replicates"][0] == "2/3"  # the diverged replicate counts, as 0
    if seeds.spec["search"]["aggregate"] == "mean":
        assert diverged["val_score_mean"][0] == pytest.approx((0.62 + DIVERGED_SCORE) / 2)
    assert board.filter(pl.col("config_hash") == _hashes(seeds)[FAILED])["replicates"][0] == "1/3"


@pytest.mark.parametrize(
    "statuses, shown",
    [
        (["completed"] * 3, "completed"),
        (["completed", "diverged", "completed"], "completed"),  # a failure on that seed, counted 0
        (["diverged"] * 3, "failed"),
        (["completed", "failed"], "failed"),
        (["completed", "pruned"], "pruned after 2"),
        (["completed", "completed"], "pruned after 2"),  # raced out
    ],
)
def test_config_status_is_the_searchs_verdict(statuses: list[str], shown: str) -> None:
    """The dashboard names a finished configuration as the search judged it."""
    from tacfn.search._racing import Race
    from tacfn.search._space_schema import SearchSettings

    race = Race(SearchSettings(seeds=[0, 1, 2], racing={"test": "none"}), 0, 0)
    rows = [{"config_hash": "c", "replicate": i, "status": s, "val_score": 0.5} for i, s in enumerate(statuses)]
    verdict = race.verdict(race.configurations(rows), "c")
    assert config_status(statuses, 3) == shown
    assert {"completed": "completed", "failed": "failed", "pruned": "pruned after 2", None: "pruned after 2"}[verdict] == shown


def test_config_status_while_running() -> None:
    assert config_status(["completed", "running"], 3) == "running"
    assert config_status(["completed", "failed", "running"], 3) == "failed"


def test_the_chosen_configuration_shows_its_test_mean_and_interval(seeds: dashboards.Experiment) -> None:
    board = dashboards.configuration_leaderboard(seeds)
    tested = board.filter(pl.col("test_mean").is_not_null())
    assert tested["config_hash"].to_list() == [_hashes(seeds)[SEED_AWARE_BEST]] and tested["rank"][0] == 1
    assert tested["test_mean"][0] == pytest.approx(sum(SEED_AWARE_TESTS) / 3)
    assert (tested["test_low"][0], tested["test_high"][0]) == pytest.approx(interval95(SEED_AWARE_TESTS))
    low, high = interval95(SEED_AWARE_TESTS)
    cells = dashboards.plot_configuration_leaderboard(seeds).data[0].cells.values[-1]
    assert cells[0] == f"0.620 [{low:.3f}, {high:.3f}]" and set(cells[1:]) == {""}


def test_replicates_figure_shows_each_scored_replicate_and_the_aggregate(seeds: dashboards.Experiment) -> None:
    info = _get_replicates_info(seeds)
    assert isinstance(info, ReplicatesInfo)
    board = dashboards.configuration_leaderboard(seeds)
    assert info.points.height == sum(len(_expected(seeds, h)) for h in board["config_hash"]) == 18
    diverged = info.points.filter(pl.col("status") == "diverged")
    assert diverged["value"].to_list() == [DIVERGED_SCORE] and diverged["config_hash"][0] == _hashes(seeds)[DIVERGED]
    figure = dashboards.plot_replicates(seeds)
    marks = figure.data[-1]
    how = seeds.spec["search"]["aggregate"]
    assert list(marks.customdata) == board["config_hash"].to_list() and list(marks.x) == board["rank"].to_list()
    assert list(marks.y) == board[f"val_score_{how}"].to_list()
    trials = {t for trace in figure.data[:-1] for t in trace.customdata}
    assert trials == set(info.points["trial_id"])


def test_a_search_without_seeds_has_no_configuration_views(tmp_path: Path) -> None:
    exp = dashboards.load_experiment(write_search_store(tmp_path / "quick", trials=12))
    assert configurations(exp) is None and dashboards.plot_replicates(exp) is None
    assert dashboards.plot_configuration_leaderboard(exp) is None
    with pytest.raises(ValueError, match="needs a seed-aware search .* but quick \\(search\\) is not one"):
        dashboards.configuration_leaderboard(exp)
    one_seed = dataclasses.replace(exp, spec={**exp.spec, "search": {**exp.spec["search"], "seeds": [0], "folds": [1]}})
    assert configurations(one_seed) is None  # one replicate per configuration: trials, as before


def test_history_has_one_point_per_configuration_in_first_start_order(seeds: dashboards.Experiment) -> None:
    confs = configurations(seeds)
    assert confs is not None
    aggregates = dict(confs.table.select("config_hash", "aggregate").iter_rows())
    info = _get_history_info(seeds)
    hashes = _hashes(seeds)
    scored = [i for i in range(len(SEED_AWARE)) if i != FAILED]  # SEED_AWARE is in start order
    assert info.points["config_hash"].to_list() == [hashes[i] for i in scored]
    assert info.points["value"].to_list() == [aggregates[hashes[i]] for i in scored]
    best, expected = None, []
    for i, value in zip(scored, info.points["value"]):
        if i in (0, 1, SEED_AWARE_BEST, 5):
            best = value if best is None else max(best, value)
        expected.append(best)
    assert info.points["best"].to_list() == expected
    figure = dashboards.plot_optimization_history(seeds)
    points = {h: trace.name for trace in figure.data if trace.customdata is not None for h in trace.customdata}
    assert points == {hashes[i]: "completed" if i in (0, 1, SEED_AWARE_BEST, 5) else "pruned" for i in scored}
    best_trials = seeds.trials.filter(pl.col("config_hash") == hashes[SEED_AWARE_BEST]).sort("replicate")["trial_id"]
    assert list(figure.layout.meta["members"][hashes[SEED_AWARE_BEST]]) == best_trials.to_list()


def test_parallel_coordinates_draw_one_line_per_completed_configuration(seeds: dashboards.Experiment) -> None:
    board = dashboards.configuration_leaderboard(seeds)
    how = seeds.spec["search"]["aggregate"]
    completed = board.filter(pl.col("status") == "completed")
    info = _get_parallel_info(seeds)
    assert sorted(info.trial_ids) == sorted(completed["config_hash"]) and info.total == 4
    by_hash = dict(completed.select("config_hash", f"val_score_{how}").iter_rows())
    line = dashboards.plot_parallel_coordinate(seeds).data[0].line
    assert list(line.color) == [by_hash[h] for h in info.trial_ids] == info.scores
    assert line.colorbar.title.text == info.dimensions[-1].label == f"val_score {how}"
    fusion = next(d for d in info.dimensions if d.label == "fusion.name")
    blocks = dict(completed.select("config_hash", "param.model.fusion.name").iter_rows())
    assert [fusion.ticktext[int(v)] for v in fusion.values] == [blocks[h] for h in info.trial_ids]


def test_a_configuration_still_running_is_neither_ranked_nor_drawn_as_scored(seeds: dashboards.Experiment) -> None:
    """A live search: the mult configuration's third replicate runs, and nothing is chosen yet."""
    mult = _hashes(seeds)[0]
    last = seeds.trials.filter(pl.col("config_hash") == mult).sort("replicate")["trial_id"][-1]
    running = pl.col("trial_id") == last
    trials = seeds.trials.with_columns(
        pl.when(running).then(pl.lit("running")).otherwise(pl.col("status")).alias("status"),
        pl.when(running).then(None).otherwise(pl.col("val_score")).alias("val_score"),
        pl.lit(False).alias("chosen"),
    )
    live = dataclasses.replace(seeds, trials=trials)
    board = dashboards.configuration_leaderboard(live)
    row = board.filter(pl.col("config_hash") == mult)
    assert (row["status"][0], row["replicates"][0]) == ("running", "2/3")
    assert board.filter(pl.col("status") == "completed")["rank"].to_list() == [1, 2, 3]
    assert board["test_mean"].null_count() == board.height
    assert mult not in _get_history_info(live).points["config_hash"] and mult not in _get_parallel_info(live).trial_ids


def test_the_page_of_a_seed_aware_search_ranks_configurations(seeds: dashboards.Experiment) -> None:
    (section,) = build_sections([seeds.root])
    names = [v.name for v in section.views if v.figure is not None]
    assert names[:4] == ["configurations", "replicates", "history", "parallel"] and "leaderboard" not in names
    assert not [v.note for v in section.views if v.note and v.note.level == "error"]
