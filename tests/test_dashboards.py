"""Dashboard views from real results stores: the info step of every view, and the page."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import plotly.offline
import polars as pl
import pytest
from _stores import ABLATION_SIZES, ATTENTION, FUSIONS, IEMOCAP, SPACE, write_ablation_store, write_search_store

import dashboards
from dashboards._ablation import _get_ablation_info
from dashboards._ablation_blocks import RECORDED, _get_blocks_caveat, _get_blocks_cells, _get_blocks_info
from dashboards._best import _get_confusion_info, _get_missing_info, _get_per_class_info
from dashboards._compare import _get_compare_info
from dashboards._curves import _get_curves_info
from dashboards._common import Unavailable
from dashboards._history import _get_history_info
from dashboards._importance import _get_importance_info
from dashboards._leaderboard import _get_leaderboard_info
from dashboards._page import build_sections, render_page
from dashboards._parallel import NOT_SAMPLED, _get_parallel_info
from dashboards._params import categories, param_frame, space_axes
from dashboards._pareto import _get_pareto_info, _get_pareto_plot
from dashboards._slices import _get_slice_info
from dashboards._timeline import _get_timeline_info
from tacfn.errors import ConfigError, DataError
from tacfn.store import ExperimentStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search_store(tmp_path_factory.mktemp("search") / "quick", objectives=["num_parameters", "latency_ms"])


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ablation_store(tmp_path_factory.mktemp("ablation") / "fusion_ablation")


@pytest.fixture(scope="module")
def search(search_dir: Path) -> dashboards.Experiment:
    return dashboards.load_experiment(search_dir)


@pytest.fixture(scope="module")
def ablation(ablation_dir: Path) -> dashboards.Experiment:
    return dashboards.load_experiment(ablation_dir)


def _payload(page: str) -> dict:
    match = re.search(r"<script type='application/json' id='dashboard-data'>(.*?)</script>", page, re.S)
    assert match, "the page has no dashboard-data block"
    return json.loads(match.group(1))


# --- isolation and loading -----------------------------------------------------------------------


def test_dashboards_render_without_importing_torch_or_ray(search_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import dashboards\n"
        "loaded = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not loaded, f'import dashboards loaded {loaded}'\n"
        f"dashboards.write_dashboard([{str(search_dir)!r}], {str(tmp_path / 'd.html')!r})\n"
        "loaded = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not loaded, f'write_dashboard loaded {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "d.html").is_file()


def test_a_folder_that_is_not_an_experiment_raises_one_line(tmp_path: Path) -> None:
    (tmp_path / "trials.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"is not a tacfn experiment folder \(no experiment.json\)") as info:
        dashboards.write_dashboard([tmp_path])
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="is not a tacfn experiment folder"):
        dashboards.load_experiment(tmp_path / "missing")


def test_load_experiment_reads_the_spec_and_all_three_tables(search: dashboards.Experiment) -> None:
    assert (search.kind, search.name, search.metric) == ("search", "quick", "val_score")
    assert search.objectives == ["num_parameters", "latency_ms"]
    assert search.trials.height == 30 and search.problems == ()
    assert set(search.epochs["trial_id"]) <= set(search.trials["trial_id"])
    assert search.predictions.height == 48
    assert search.completed["status"].unique().to_list() == ["completed"]


def test_param_frame_keeps_only_sampled_values() -> None:
    """An experiment without param.* columns (schema version 1): the fallback from its config."""
    trials = pl.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "config.model.fusion.name": ["tacfn", "concat", "tacfn", "mult"],
            "config.model.fusion.layers": [2, 2, 5, 3],  # when: tacfn or mult; 5 is outside [1, 3]
            "config.model.fusion.heads": [4, 4, 3, 8],  # choice [1, 2, 4, 8]
            "config.train.batch_size": [8, 16, 12, 32],  # int [8, 32] step 8: 12 is off the grid
        }
    )
    axes = space_axes({"space": SPACE})
    lr, batch_size = axes[-2:]
    assert (lr.key, lr.kind, lr.log, batch_size.kind, batch_size.step) == ("train.lr", "float", True, "int", 8)
    frame = param_frame(trials, axes)
    assert frame["model.fusion.layers"].to_list() == [2.0, None, None, 3.0]
    assert frame["model.fusion.heads"].to_list() == ["4", "4", None, "8"]
    assert frame["train.batch_size"].to_list() == [8.0, 16.0, None, 32.0]
    assert frame["model.fusion.selection"].to_list() == [None] * 4  # no such column
    assert categories(trials, axes[1]) == ["1", "2", "4", "8"]


def test_the_views_show_what_was_sampled_not_what_base_set(search: dashboards.Experiment) -> None:
    """BASE sets heads 4 for every trial, but the search samples heads only for blocks with
    attention: each trial's param.* columns, not its config, say which axes it sampled."""
    completed, axes = search.completed, space_axes(search.spec)
    frame = param_frame(completed, axes)
    recorded = completed.select(
        "trial_id", *(pl.col(f"param.{a.key}").cast(pl.Utf8 if a.kind == "choice" else pl.Float64).alias(a.key) for a in axes)
    )
    assert frame.equals(recorded)
    attention = completed["config.model.fusion.name"].is_in(ATTENTION)
    assert (completed.filter(~attention)["config.model.fusion.heads"] == 4).all()
    assert frame["model.fusion.heads"].is_null().to_list() == (~attention).to_list()
    panels = {p.axis.key: p for p in _get_slice_info(search).panels}
    assert set(panels["model.fusion.heads"].points["trial_id"]) == set(completed.filter(attention)["trial_id"])
    heads = next(d for d in _get_parallel_info(search).dimensions if d.label == "fusion.heads")
    assert heads.ticktext[-1] == NOT_SAMPLED and heads.values.count(len(heads.ticktext) - 1) == (~attention).sum()


def test_an_experiment_from_before_param_columns_still_opens_and_renders(tmp_path: Path) -> None:
    """Schema version 1 has no param.* columns: the views fall back to the config, with the
    spec's `when` conditions (layers only for blocks with attention). heads, which BASE sets,
    then reads as sampled for every block: the guess the fallback documents."""
    root = write_search_store(tmp_path / "old", schema_version=1)
    exp = dashboards.load_experiment(root)
    assert not exp.problems and not [c for c in exp.trials.columns if c.startswith("param.")]
    frame = param_frame(exp.completed, space_axes(exp.spec))
    attention = exp.completed["config.model.fusion.name"].is_in(ATTENTION)
    assert frame["model.fusion.layers"].is_null().to_list() == (~attention).to_list()
    assert frame["model.fusion.heads"].null_count() == 0
    page = dashboards.write_dashboard([root]).read_text()
    ids = [f["id"] for f in _payload(page)["figures"]]
    assert {"exp0-parallel", "exp0-slices", "exp0-importance"} <= set(ids)
    assert 'class="notice notice-error"' not in page and "Traceback" not in page


# --- search views --------------------------------------------------------------------------------


def test_history_best_so_far_follows_completed_trials_in_start_order(search: dashboards.Experiment) -> None:
    info = _get_history_info(search)
    rows = search.trials.sort("started_at", "trial_id").to_dicts()
    scored = [r for r in rows if r["status"] in ("completed", "pruned") and r["val_score"] is not None]
    assert info.points["trial_id"].to_list() == [r["trial_id"] for r in scored]
    best, expected = None, []
    for r in scored:
        if r["status"] == "completed":
            best = r["val_score"] if best is None else max(best, r["val_score"])
        expected.append(best)
    assert info.points["best"].to_list() == expected
    assert "pruned" in info.points["status"].to_list()  # drawn, but never the best


def test_parallel_coordinates_log_axes_categories_and_unsampled_axes(search: dashboards.Experiment) -> None:
    info = _get_parallel_info(search)
    dims = {d.label: d for d in info.dimensions}
    by_id = search.completed.select("trial_id", "config.train.lr", "config.model.fusion.name").rows_by_key("trial_id")
    lr = dims["train.lr (log)"]
    assert lr.values == pytest.approx([math.log10(by_id[t][0][0]) for t in info.trial_ids])
    assert lr.ticktext == ["0.0001", "0.001", "0.01"]
    fusion = dims["fusion.name"]
    assert fusion.ticktext == list(FUSIONS)
    assert [fusion.ticktext[int(v)] for v in fusion.values] == [by_id[t][0][1] for t in info.trial_ids]
    layers = dims["fusion.layers"]  # sampled only for blocks with attention
    assert layers.ticktext[0] == NOT_SAMPLED
    unsampled = [t for t, v in zip(info.trial_ids, layers.values) if v == layers.tickvals[0]]
    assert unsampled and all(by_id[t][0][1] not in ATTENTION for t in unsampled)
    assert info.dimensions[-1].label == "val_score" and info.total == search.completed.height


def test_large_views_sample_visibly_and_keep_the_best(search: dashboards.Experiment) -> None:
    best = search.completed.sort("val_score", descending=True)["trial_id"][0]
    parallel = _get_parallel_info(search, limit=10)
    assert len(parallel.trial_ids) == 10 and best in parallel.trial_ids
    title = dashboards.plot_parallel_coordinate(search, limit=10).layout.title.text
    assert "showing 10 of 25 completed trials" in title
    slices = _get_slice_info(search, limit=10)
    assert (slices.shown, slices.total) == (10, 25)
    assert "showing 10 of 25" in dashboards.plot_slice(search, limit=10).layout.title.text


def test_slices_only_show_sampled_values(search: dashboards.Experiment) -> None:
    panels = {p.axis.key: p for p in _get_slice_info(search).panels}
    selection = panels["model.fusion.selection"]  # when: fusion is tacfn
    tacfn = search.completed.filter(pl.col("config.model.fusion.name") == "tacfn")["trial_id"]
    assert sorted(selection.points["trial_id"]) == sorted(tacfn)
    assert selection.categories == ["transformer", "mean", "none"]
    assert panels["train.lr"].axis.log and panels["model.fusion.name"].points.height == search.completed.height


def test_importance_ranks_the_planted_fusion_effect_first(search: dashboards.Experiment) -> None:
    found = dashboards.param_importances(search)
    assert next(iter(found)) == "model.fusion.name"
    assert sum(found.values()) == pytest.approx(1.0)
    assert set(found) <= {k for k in search.spec["space"]}


def test_importance_needs_ten_completed_trials(tmp_path: Path) -> None:
    exp = dashboards.load_experiment(write_search_store(tmp_path / "small", trials=9))
    assert dashboards.param_importances(exp) == {} and dashboards.plot_param_importances(exp) is None
    assert _get_importance_info(exp) == Unavailable(
        f"needs at least 10 completed trials with a val_score; this experiment has {exp.completed.height}"
    )


def test_importance_says_when_no_axis_varies_or_every_importance_is_zero(search: dashboards.Experiment) -> None:
    fixed = dataclasses.replace(search, spec={**search.spec, "space": {"train.epochs": {"int": [1, 10]}}})
    assert _get_importance_info(fixed) == Unavailable(
        "needs an axis with more than one value; none of train.epochs takes two in the completed trials"
    )
    no_space = _get_importance_info(dataclasses.replace(search, spec={}))
    assert no_space.reason.startswith("the experiment's spec has no search space")
    flat = dataclasses.replace(search, trials=search.trials.with_columns(pl.lit(0.5).alias("val_score")))
    info = _get_importance_info(flat)  # Optuna would call every axis equally important
    assert isinstance(info, Unavailable) and "every importance is 0" in info.reason


def test_timeline_shows_every_trial_with_running_ones_until_now(tmp_path: Path) -> None:
    exp = dashboards.load_experiment(write_search_store(tmp_path / "partial", trials=30, recorded=12, running=2))
    now = datetime(2025, 3, 1, 10, 0, tzinfo=timezone.utc)
    info = _get_timeline_info(exp, now=now)
    assert info.bars.height == info.total == 12
    running = info.bars.filter(pl.col("running"))
    assert running.height == 2 and running["finish"].to_list() == [now, now]
    assert sorted(info.bars["worker"].unique()) == ["10.0.0.1:4100", "10.0.0.2:4101"]


def test_timeline_draws_one_row_per_concurrent_slot(tmp_path: Path) -> None:
    """Rows are lanes: each trial takes the lowest lane free at its start, so there are as many
    rows as trials ever ran at once, however many worker processes ran them."""
    store = ExperimentStore.create(tmp_path / "overlap", "search", "overlap", {"space": {}, "search": {}})
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
    spans = {"a": (0, 10), "b": (2, 5), "c": (5, 8), "d": (6, 12), "e": (11, 13), "f": (12, None)}  # minutes; f runs
    for i, (trial_id, (start, finish)) in enumerate(spans.items()):
        row = {
            "trial_id": trial_id,
            "status": "running" if finish is None else "completed",
            "val_score": 0.5,
            "started_at": t0 + timedelta(minutes=start),
            "finished_at": None if finish is None else t0 + timedelta(minutes=finish),
            "worker": f"10.0.0.1:{4100 + i}",  # a fresh process per trial, as Ray starts them
        }
        store.record_trial(row)
    exp = dashboards.load_experiment(store.root)
    info = _get_timeline_info(exp, now=t0 + timedelta(minutes=20))
    lane = dict(zip(info.bars["trial_id"], info.bars["lane"]))
    # c starts as b ends and takes its lane; d finds a and c busy; e takes a's lane; f starts
    # as d ends and takes the lowest free lane, c's
    assert lane == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 0, "f": 1}
    assert info.lanes == 3
    figure = dashboards.plot_timeline(exp)
    assert "Trial timeline: 6 trials, at most 3 at once" in figure.layout.title.text
    assert sorted({y for trace in figure.data for y in trace.y}) == [1, 2, 3]


def test_timeline_lanes_equal_the_most_trials_at_once(search: dashboards.Experiment) -> None:
    info = _get_timeline_info(search)
    points = sorted([(t, 1) for t in info.bars["start"]] + [(t, -1) for t in info.bars["finish"]])  # ends before starts
    most = max(np.cumsum([step for _, step in points]))
    assert info.lanes == most == 2 and info.bars["worker"].n_unique() == 2
    for _, rows in info.bars.group_by("lane"):  # no two trials in one lane overlap
        ordered = rows.sort("start")
        assert (ordered["start"].slice(1) >= ordered["finish"].slice(0, ordered.height - 1)).all()


def test_leaderboard_ranks_filters_and_rejects_bad_filters(search: dashboards.Experiment) -> None:
    board = dashboards.leaderboard(search, top_k=5)
    scores = search.trials["val_score"].drop_nulls().sort(descending=True).head(5).to_list()
    assert board["val_score"].to_list() == scores and board["rank"].to_list() == [1, 2, 3, 4, 5]
    assert board.filter(pl.col("test_score").is_not_null())["trial_id"].to_list() == [board["trial_id"][0]]
    tacfn = dashboards.leaderboard(search, top_k=100, fusion="tacfn")
    assert tacfn.height == 6 and set(tacfn["config.model.fusion.name"]) == {"tacfn"}
    pruned = _get_leaderboard_info(search, status=["pruned"])
    assert set(pruned.table["status"]) == {"pruned"} and pruned.total == 4
    with pytest.raises(ValueError, match=r"`status` must be among \['completed', 'pruned'.*but got \['done'\]"):
        dashboards.leaderboard(search, status="done")
    with pytest.raises(ValueError, match="`top_k >= 1` must hold"):
        dashboards.leaderboard(search, top_k=0)


def test_leaderboard_ranks_as_the_search_picks_and_puts_the_chosen_trial_first(tmp_path: Path) -> None:
    """Ties on the metric go to the earlier start (no start time last), then the lower id, as
    the search's ``_rank`` breaks them; completed trials before pruned ones; chosen first."""
    store = ExperimentStore.create(tmp_path / "ties", "search", "ties", {"space": {}, "search": {"metric": "val_score"}})
    t0 = datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc)
    rows = [  # trial_id, status, val_score, minutes after t0 (None: no start time)
        ("a_late", "completed", 0.8, 5),
        ("b_none", "completed", 0.8, None),
        ("c_pruned", "pruned", 0.9, 0),
        ("d_failed", "failed", None, 0),
        ("e_low", "completed", 0.7, 0),
        ("f_same", "completed", 0.8, 5),
        ("z_early", "completed", 0.8, 1),  # ties the best score, started first: the search's pick
    ]
    for trial_id, status, score, minutes in rows:
        started = None if minutes is None else t0 + timedelta(minutes=minutes)
        row = {"trial_id": trial_id, "status": status, "val_score": score, "started_at": started, "chosen": False}
        store.record_trial(row)
    expected = ["z_early", "a_late", "f_same", "b_none", "e_low", "c_pruned", "d_failed"]
    exp = dashboards.load_experiment(store.root)
    assert dashboards.leaderboard(exp, top_k=10)["trial_id"].to_list() == expected
    pick = {"trial_id": "z_early", "status": "completed", "val_score": 0.8, "started_at": t0 + timedelta(minutes=1)}
    store.record_trial({**pick, "chosen": True, "test_score": 0.75})  # as the search records its pick
    exp = dashboards.load_experiment(store.root)
    board = dashboards.leaderboard(exp, top_k=10)
    assert board["trial_id"].to_list() == expected and board["test_score"][0] == 0.75
    # a resumed search whose pick is stale still shows the trial scored on test first
    store.record_trial({"trial_id": "y_better", "status": "completed", "val_score": 0.95, "started_at": t0, "chosen": False})
    exp = dashboards.load_experiment(store.root)
    assert dashboards.leaderboard(exp, top_k=3)["trial_id"].to_list() == ["z_early", "y_better", "a_late"]


def test_learning_curves_average_the_top_configs(
    search: dashboards.Experiment, ablation: dashboards.Experiment
) -> None:
    info = _get_curves_info(search, top_k=3)
    assert len(info.groups) == 3 and info.total_groups == 25
    assert "showing 3 of 25 configs" in dashboards.plot_learning_curves(search, top_k=3).layout.title.text
    variants = _get_curves_info(ablation)
    assert variants.groups[0] == "modality_dropout" and variants.groups[-1] == "late_average"
    last = variants.curves.filter(
        (pl.col("group") == "tacfn") & (pl.col("series") == "val_score") & (pl.col("epoch") == 6)
    )
    ids = ablation.trials.filter(pl.col("variant") == "tacfn")["trial_id"].to_list()
    values = ablation.epochs.filter(pl.col("trial_id").is_in(ids) & (pl.col("epoch") == 6))["val_score"].to_numpy()
    assert last["n"].item() == 6
    assert last["mean"].item() == pytest.approx(values.mean())
    assert last["std"].item() == pytest.approx(values.std(ddof=1))


def test_pareto_front_marks_only_undominated_points(search: dashboards.Experiment) -> None:
    info = _get_pareto_info(search)
    assert [p.objective for p in info.panels] == ["num_parameters", "latency_ms"]
    for panel in info.panels:
        rows = panel.points.to_dicts()
        for p in rows:
            dominated = any(
                q["x"] <= p["x"] and q["score"] >= p["score"] and (q["x"] < p["x"] or q["score"] > p["score"])
                for q in rows
            )
            assert p["front"] == (not dominated)
    x, score = pl.Series([1.0, 2.0, 2.0, 3.0, 1.0]), pl.Series([0.5, 0.7, 0.6, 0.7, 0.5])
    assert dashboards.pareto_front(x, score).to_list() == [True, True, False, False, True]


def test_single_objective_search_has_no_pareto_view(tmp_path: Path) -> None:
    exp = dashboards.load_experiment(write_search_store(tmp_path / "single", trials=12))
    assert dashboards.plot_pareto_front(exp) is None


# --- best config ---------------------------------------------------------------------------------


def test_best_config_of_a_search_is_the_chosen_trial(search: dashboards.Experiment) -> None:
    chosen = search.trials.filter(pl.col("chosen"))
    assert chosen.height == 1
    assert dashboards.best_trials(search).trial_ids == chosen["trial_id"].to_list()
    (panel,) = _get_confusion_info(search).panels
    matrix = np.array(panel.matrix)
    expected = np.zeros((8, 8), dtype=int)
    for label, pred in search.predictions.select("label", "pred").iter_rows():
        expected[label, pred] += 1
    assert panel.classes[0] == "neutral" and (matrix == expected).all()
    per_class = _get_per_class_info(search)
    assert per_class.scores["accuracy"] == pytest.approx(list(np.diag(expected) / expected.sum(axis=1)))
    missing = _get_missing_info(search).scores
    row = chosen.to_dicts()[0]
    assert dict(zip(missing["condition"], missing["score"])) == pytest.approx(
        {
            "all modalities": row["test_score"],
            "without audio": row["test_missing_audio"],
            "without video": row["test_missing_video"],
        }
    )


def test_best_config_of_an_ablation_pools_the_best_variant(ablation: dashboards.Experiment) -> None:
    best = dashboards.best_trials(ablation)
    assert "modality_dropout" in best.label and len(best.trial_ids) == 6
    (panel,) = _get_confusion_info(ablation).panels
    assert sum(map(sum, panel.matrix)) == 6 * 24
    missing = _get_missing_info(ablation).scores
    assert set(missing["group"]) == {"tacfn", "no_selection", "modality_dropout", "late_average"}
    assert set(missing["n"]) == {6}
    # a variant with one modality has no missing-modality scores, only its own
    audio_only = dataclasses.replace(
        ablation,
        trials=ablation.trials.with_columns(
            pl.when(pl.col("variant") == "late_average").then(None).otherwise(pl.col(c)).alias(c)
            for c in ("test_missing_audio", "test_missing_video")
        ),
    )
    rows = _get_missing_info(audio_only).scores.filter(pl.col("group") == "late_average")
    assert rows["condition"].to_list() == ["all modalities"] and rows["n"].to_list() == [6]


def test_fusion_blocks_side_by_side_are_the_stores_numbers(ablation_dir: Path, ablation: dashboards.Experiment) -> None:
    """One row per variant, the baseline first: its block, its sizes, its test accuracy (mean and
    95% bootstrap interval over its runs), its accuracy with each modality missing (mean), its
    per-sample latency (median), each as the store's rows give it."""
    from dashboards._ablation_stats import bootstrap_mean

    table = dashboards.ablation_blocks_table(ablation)
    stored = pl.from_arrow(ExperimentStore.open(ablation_dir).trials())
    assert table["variant"].to_list() == ["tacfn", "no_selection", "modality_dropout", "late_average"]
    for i, row in enumerate(table.iter_rows(named=True)):
        runs = stored.filter(pl.col("variant") == row["variant"])
        scores = runs["test_score"].to_list()
        assert row["runs"] == runs.height == 6
        assert row["block"] == runs["config.model.fusion.name"].unique().item()
        assert (row["num_parameters"], row["trainable_parameters"]) == ABLATION_SIZES[row["variant"]]
        assert row["mean"] == pytest.approx(np.mean(scores))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_mean(scores, seed=i)[:2])
        assert row["ci_low"] < row["mean"] < row["ci_high"]
        for modality in ("audio", "video"):
            assert row[f"missing_{modality}"] == pytest.approx(runs[f"test_missing_{modality}"].mean())
        assert row["ms_per_sample"] == pytest.approx(float(np.median(runs["test_ms_per_sample"].to_numpy())))
    assert dashboards.ablation_blocks_table(dashboards.load_experiment(ablation.root)).equals(table)  # deterministic
    figure = dashboards.plot_ablation_blocks(ablation)
    header, cells = figure.data[0].header["values"], figure.data[0].cells["values"]
    assert header[-3:] == ("without audio (mean)", "without video (mean)", "ms per sample (median)")
    first = [column[0] for column in cells]
    assert first[:5] == ["tacfn", "tacfn", "120,000 (40,000 trainable)", "6", f"{table['mean'][0]:.3f} [{table['ci_low'][0]:.3f}, {table['ci_high'][0]:.3f}]"]
    assert "fusion block and head only (frozen backbone)" in figure.layout.title.text
    assert _get_blocks_info(ablation).gaps == dict.fromkeys(RECORDED, 0) and _get_blocks_caveat(_get_blocks_info(ablation)) is None
    # a one-modality variant has nothing to leave out: its cells there are blank
    one_modality = dataclasses.replace(
        ablation,
        trials=ablation.trials.with_columns(
            pl.when(pl.col("variant") == "late_average").then(None).otherwise(pl.col("test_missing_video")).alias("test_missing_video")
        ),
    )
    assert _get_blocks_cells(_get_blocks_info(one_modality))["missing_video"][-1] == ""
    search_like = dataclasses.replace(ablation, kind="search")
    assert _get_blocks_info(search_like) is None and dashboards.plot_ablation_blocks(search_like) is None


def test_fusion_blocks_of_runs_that_predate_a_column_say_what_is_blank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder whose runs did not time their test pass: the table is drawn without latency, a
    note above it says so, and `tacfn dashboard` prints that note once and exits 0; runs of
    which only some record a column are summarised by the others, and the note says how many."""
    from tacfn.cli import main

    root = write_ablation_store(tmp_path / "older", latency=False)
    exp = dashboards.load_experiment(root)
    info = _get_blocks_info(exp)
    assert info.table["ms_per_sample"].null_count() == 4 and info.table["mean"].null_count() == 0
    text = (
        "Fusion blocks side by side: no run records its per-sample test latency (test_ms_per_sample in "
        "trials.parquet): that column is blank"
    )
    assert _notes(root) == {"exp0-ablation-blocks": text}
    assert main(["dashboard", str(root), "--out", str(tmp_path / "d.html")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"tacfn: note: {text}"] and out == f"dashboard: {tmp_path / 'd.html'}\n"
    page = (tmp_path / "d.html").read_text()
    note_at = page.index('<div class="view-note" id="exp0-ablation-blocks-note">')
    assert html.escape(text) in page and note_at < page.index('<div class="view" id="exp0-ablation-blocks"')
    assert "exp0-ablation-blocks" in {f["id"] for f in _payload(page)["figures"]}  # drawn all the same
    assert _payload(page)["slots"].count("exp0-ablation-blocks-note") == 1

    partly = write_ablation_store(tmp_path / "partly")
    exp = dashboards.load_experiment(partly)
    timed = exp.trials.with_columns(
        pl.when((pl.col("variant") == "tacfn") & (pl.col("seed") == 0)).then(None).otherwise(pl.col("test_ms_per_sample")).alias("test_ms_per_sample")
    )
    info = _get_blocks_info(dataclasses.replace(exp, trials=timed))
    assert _get_blocks_caveat(info) == (
        "2 of 24 runs do not record their per-sample test latency (test_ms_per_sample): that column summarises the others"
    )
    others = timed.filter((pl.col("variant") == "tacfn") & pl.col("test_ms_per_sample").is_not_null())["test_ms_per_sample"]
    assert info.table["ms_per_sample"][0] == pytest.approx(others.median())


def test_iemocap_gets_one_confusion_per_emotion_and_per_emotion_scores(tmp_path: Path) -> None:
    exp = dashboards.load_experiment(write_search_store(tmp_path / "iemocap", trials=12, dataset="iemocap"))
    panels = _get_confusion_info(exp).panels
    assert [p.task for p in panels] == sorted(IEMOCAP)
    assert all(p.classes == [f"not {p.task}", p.task] and sum(map(sum, p.matrix)) == 48 for p in panels)
    per_class = _get_per_class_info(exp)
    chosen = exp.trials.filter(pl.col("chosen")).to_dicts()[0]
    assert per_class.classes == sorted(IEMOCAP)
    assert per_class.scores["accuracy"] == [chosen[f"test_{e}_accuracy"] for e in sorted(IEMOCAP)]
    assert per_class.scores["weighted F1"] == [chosen[f"test_{e}_weighted_f1"] for e in sorted(IEMOCAP)]
    assert _get_missing_info(exp).conditions == ["all modalities", "without audio", "without text", "without vision"]


# --- several experiments -------------------------------------------------------------------------


def test_compare_shows_each_experiment_and_disambiguates_names(search_dir: Path, tmp_path: Path) -> None:
    twin = dashboards.load_experiment(write_search_store(tmp_path / "quick", trials=12, seed=1))
    first = dashboards.load_experiment(search_dir)
    info = _get_compare_info([first, twin])
    assert info.names == [f"quick ({search_dir})", f"quick ({tmp_path / 'quick'})"]
    assert [s.len() for s in info.scores] == [first.completed.height, twin.completed.height]
    assert info.histories[0]["best"].is_sorted()
    with pytest.raises(ValueError, match="at least 2 experiments"):
        dashboards.plot_compare([first])


# --- the page ------------------------------------------------------------------------------------


def test_dashboard_is_one_offline_file_with_every_view(search_dir: Path, ablation_dir: Path, tmp_path: Path) -> None:
    out = dashboards.write_dashboard([search_dir, ablation_dir], tmp_path / "both.html")
    page = out.read_text()
    bundle = plotly.offline.get_plotlyjs()
    assert page.count(bundle) == 1  # plotly.js inlined once
    outside = page.replace(bundle, "")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", outside, re.I)
    assert "<script src" not in outside and "<link" not in outside
    ids = [f["id"] for f in _payload(page)["figures"]]
    search_views = [
        *("leaderboard", "history", "parallel", "slices", "importance", "pareto"),
        *("curves", "confusion", "per-class", "missing-modality", "timeline"),
    ]
    ablation_views = [
        *("ablation-table", "ablation-forest", "ablation-scores", "ablation-blocks", "curves", "missing-modality"),
        *("confusion", "per-class", "leaderboard", "timeline"),
    ]
    assert ids == ["compare-view", *(f"exp0-{v}" for v in search_views), *(f"exp1-{v}" for v in ablation_views)]
    assert all(f'id="{i}"' in page for i in ids)
    assert 'class="notice notice-error"' not in page and "Traceback" not in page
    assert 'class="view-note"' not in page  # every view of a finished store draws


def test_default_output_is_inside_the_experiment_folder(search_dir: Path) -> None:
    out = dashboards.write_dashboard([search_dir])
    assert out == search_dir / "dashboard.html" and out.stat().st_size > 1_000_000


def test_a_page_replaces_only_a_page_tacfn_wrote(search_dir: Path, tmp_path: Path) -> None:
    """An earlier dashboard is replaced; a file tacfn did not write, or a name that is no
    .html page (a results table, say), is refused and left as it was."""
    from dashboards.run_report import write_run_report

    out = dashboards.write_dashboard([search_dir], tmp_path / "d.html")
    assert dashboards.write_dashboard([search_dir], out) == out
    notes = tmp_path / "notes.html"
    notes.write_text("<p>mine</p>")
    with pytest.raises(ConfigError, match=r"notes\.html exists and is not a page tacfn wrote"):
        dashboards.write_dashboard([search_dir], notes)
    with pytest.raises(ConfigError, match=r"trials\.parquet: a dashboard is an HTML page"):
        dashboards.write_dashboard([search_dir], search_dir / "trials.parquet")
    with pytest.raises(ConfigError, match=r"notes\.html exists and is not a page tacfn wrote"):
        write_run_report(tmp_path, notes)
    assert notes.read_text() == "<p>mine</p>" and not list(tmp_path.glob("*.tmp"))


def test_empty_store_says_no_trials_yet(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    ExperimentStore.create(root, "search", "empty", {"space": {}, "search": {"trials": 8}})
    page = dashboards.write_dashboard([root]).read_text()
    assert "No trials recorded yet (0 of 8 planned)" in page
    assert _payload(page)["figures"] == []


def test_partial_store_shows_progress_and_the_finished_trials(tmp_path: Path) -> None:
    root = write_search_store(tmp_path / "running", trials=30, recorded=12, running=2)
    found = dashboards.notices(dashboards.load_experiment(root))
    assert [n.level for n in found] == ["info", "warning"]
    assert found[0].text.startswith("In progress: 10 trials finished of 30 planned, 2 running.")
    page = dashboards.write_dashboard([root]).read_text()
    ids = {f["id"] for f in _payload(page)["figures"]}
    assert {"exp0-history", "exp0-parallel", "exp0-timeline"} <= ids
    assert "exp0-confusion" not in ids  # nothing chosen while the search runs


def test_corrupt_tables_are_named_on_the_page_and_the_rest_still_shows(search_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "corrupt"
    shutil.copytree(search_dir, root)
    (root / "epochs.parquet").write_bytes(b"PAR1 truncated")
    exp = dashboards.load_experiment(root)
    assert len(exp.problems) == 1 and "epochs.parquet: not a readable Parquet file" in exp.problems[0]
    sections = build_sections([root])
    drawn = [v.id for v in sections[0].views if v.figure]
    assert "exp0-history" in drawn and "exp0-curves" not in drawn
    (note,) = [v.note for v in sections[0].views if v.note]
    assert note.level == "warning" and note.text.startswith(
        f"Learning curves: epochs.parquet could not be read ({root / 'epochs.parquet'}: not a readable Parquet file"
    )
    (root / "trials.parquet").write_bytes(b"")
    found = dashboards.notices(dashboards.load_experiment(root))
    assert [n.level for n in found] == ["error", "error"]  # no "0 trials finished" beside them
    page = render_page(build_sections([root]))
    assert "trials.parquet: not a readable Parquet file" in page and "Traceback" not in page
    assert _payload(page)["figures"] == []


def _notes(root: Path) -> dict[str, str]:
    """The notes of the first experiment's section: view id -> text."""
    return {v.id: v.note.text for v in build_sections([root])[0].views if v.note}


def test_missing_optional_tables_are_said_where_their_figures_would_be(
    search_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tacfn.cli import main

    root = tmp_path / "missing"
    shutil.copytree(search_dir, root)
    (root / "epochs.parquet").unlink()
    (root / "predictions.parquet").unlink()
    expected = {
        "exp0-curves": f"Learning curves: epochs.parquet is missing ({root / 'epochs.parquet'})",
        "exp0-confusion": f"Confusion matrix: predictions.parquet is missing ({root / 'predictions.parquet'})",
        "exp0-per-class": f"Per-class scores: predictions.parquet is missing ({root / 'predictions.parquet'})",
    }
    assert _notes(root) == expected
    assert main(["dashboard", str(root), "--out", str(tmp_path / "d.html")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"tacfn: note: {text}" for text in expected.values()]
    assert out == f"dashboard: {tmp_path / 'd.html'}\n"
    page = (tmp_path / "d.html").read_text()
    for view_id, text in expected.items():  # each note where its figure would be: between its neighbours
        assert f'<div class="view-note" id="{view_id}-note">' in page and html.escape(text) in page
    order = [m.group(1) for m in re.finditer(r'<div class="view(?:-note)?" id="(exp0-[a-z-]+?)(?:-note)?"', page)]
    assert order[order.index("exp0-pareto") + 1 : order.index("exp0-timeline")] == [
        "exp0-curves", "exp0-confusion", "exp0-per-class", "exp0-missing-modality"
    ]
    assert {f["id"] for f in _payload(page)["figures"]}.isdisjoint(expected)


def test_an_unreadable_optional_table_still_gives_the_page(
    search_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tacfn.cli import main

    root = tmp_path / "corrupt"
    shutil.copytree(search_dir, root)
    (root / "predictions.parquet").write_bytes(b"PAR1 truncated")
    assert main(["dashboard", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert [line.split(" (")[0] for line in lines] == [
        "tacfn: note: Confusion matrix: predictions.parquet could not be read",
        "tacfn: note: Per-class scores: predictions.parquet could not be read",
    ]
    assert "not a readable Parquet file" in lines[0] and out == f"dashboard: {root / 'dashboard.html'}\n"
    (root / "trials.parquet").write_bytes(b"")  # the required table: refused, one line, no page
    (root / "dashboard.html").unlink()
    assert main(["dashboard", str(root)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("tacfn: error: ") and "trials.parquet: not a readable Parquet file" in err
    assert err.rstrip().endswith("(and 1 more); no dashboard written") and len(err.splitlines()) == 1
    assert not (root / "dashboard.html").exists() and out == ""


def test_every_view_says_why_it_has_nothing_to_draw(
    search: dashboards.Experiment, ablation: dashboards.Experiment, tmp_path: Path
) -> None:
    running = write_search_store(tmp_path / "running", trials=30, recorded=12, running=2)
    untested = "no config is scored on test yet (the search scores the one it chooses once every trial has finished)"
    assert _notes(running) == {
        "exp0-importance": "Parameter importance: needs at least 10 completed trials with a val_score; "
        "this experiment has 8",
        "exp0-confusion": f"Confusion matrix: {untested}",
        "exp0-per-class": f"Per-class scores: {untested}",
        "exp0-missing-modality": f"Score with a modality missing: {untested}",
    }
    unstarted = dataclasses.replace(search, trials=search.trials.with_columns(pl.lit(None).alias("started_at")))
    assert _get_timeline_info(unstarted).reason == "none of the 30 trials has a start time (started_at in trials.parquet)"
    spec = {**search.spec, "search": {**search.spec["search"], "objectives": ["latency_ms", "memory_mb"]}}
    pareto = _get_pareto_info(dataclasses.replace(search, spec=spec))
    assert pareto.left_out == ["memory_mb is not a column of trials.parquet"]
    assert "(left out: memory_mb is not a column of trials.parquet)" in _get_pareto_plot(pareto).layout.title.text
    spec = {**search.spec, "search": {**search.spec["search"], "objectives": ["memory_mb"]}}
    only_absent = _get_pareto_info(dataclasses.replace(search, spec=spec))
    assert only_absent == Unavailable("memory_mb is not a column of trials.parquet")
    assert _get_pareto_info(dataclasses.replace(search, spec={**search.spec, "search": {}})) is None  # single objective
    failed = dataclasses.replace(ablation, trials=ablation.trials.with_columns(pl.lit("failed").alias("status")))
    assert _get_ablation_info(failed) == Unavailable("no completed run with a val_score yet")
    assert _get_ablation_info(search) is None  # not an ablation: no view, no note
    no_tacfn = dataclasses.replace(search, trials=search.trials.filter(pl.col("config.model.fusion.name") != "tacfn"))
    assert _get_slice_info(no_tacfn).unsampled == _get_parallel_info(no_tacfn).unsampled == ["model.fusion.selection"]
    for figure in (dashboards.plot_slice(no_tacfn), dashboards.plot_parallel_coordinate(no_tacfn)):
        assert "not sampled by a completed trial: model.fusion.selection" in figure.layout.title.text
    no_scores = dataclasses.replace(search, trials=search.trials.select(pl.exclude("^test_missing_.*$")))
    assert _get_missing_info(no_scores).reason.startswith("no completed trial was scored on test with a modality missing")


def test_corrupt_experiment_json_still_shows_the_tables(search_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "bad_json"
    shutil.copytree(search_dir, root)
    (root / "experiment.json").write_text("{not json")
    exp = dashboards.load_experiment(root)
    assert exp.kind is None and "unreadable experiment file" in exp.problems[0]
    page = dashboards.write_dashboard([root]).read_text()
    assert "unreadable experiment file" in page
    ids = [f["id"] for f in _payload(page)["figures"]]
    assert ids == ["exp0-leaderboard", "exp0-history", "exp0-curves", "exp0-timeline"]


def test_ablation_scores_draw_each_family_ceiling_the_data_plant(tmp_path: Path) -> None:
    from tacfn.data.synth import planted_ceilings

    from dashboards._ablation_scores import _get_ablation_scores_info, plot_ablation_scores

    ceilings = planted_ceilings(["audio", "video"])
    record = {"dataset": "ravdess", "planted_effects": ["audio", "video"], "ceilings": ceilings}
    exp = dashboards.load_experiment(write_ablation_store(tmp_path / "planted", dataset=record))
    info = _get_ablation_scores_info(exp)
    assert info.effects == ["audio", "video"] and info.ceilings == ceilings
    assert info.order[0] == "tacfn" and info.runs.height == 4 * 3 * 2  # every (variant, seed, fold) run
    figure = plot_ablation_scores(exp)
    lines = sorted(shape.x0 for shape in figure.layout.shapes)
    assert lines == sorted(set(ceilings.values()))  # one line per ceiling, naming every family at it
    assert [a.text for a in figure.layout.annotations] == ["audio only / video only: 0.25", "additive fusion / interaction: 0.50"]
    assert "the data plant audio, video" in figure.layout.title.text
    page = dashboards.write_dashboard([exp.root], tmp_path / "page.html").read_text()
    assert "synthetic data planting audio, video" in page


def test_ablation_scores_of_real_data_draw_no_ceiling(ablation: dashboards.Experiment) -> None:
    figure = dashboards.plot_ablation_scores(ablation)
    assert not figure.layout.shapes and "real data: no planted ceilings" in figure.layout.title.text


# --- the one-run report (`tacfn dashboard` on a `tacfn train --out` folder) -------------------------


def _run_folder(root: Path, **changes: object) -> Path:
    """A `tacfn train --out` folder: result.json of a completed audio-video RAVDESS run, with ``changes``."""
    result = {
        "status": "completed", "error": None, "best_epoch": 2, "epochs_run": 2, "val": {"score": 0.5},
        "test": {"score": 0.75, "accuracy": 0.75, "weighted_f1": 0.7, "per_class_accuracy": [0.75] * 8,
                 "confusion": [[3 if i == j else 1 if j == (i + 1) % 8 else 0 for j in range(8)] for i in range(8)]},
        "test_missing_modality": {"audio": 0.5, "video": 0.25},
        "history": [{"epoch": e, "train_loss": 2.0 / e, "train_score": 0.3 * e, "val_loss": 2.1 / e, "val_score": 0.25 * e,
                     "val_weighted_f1": 0.2 * e, "seconds": 1.0} for e in (1, 2)],
        "num_parameters": 1000, "trainable_parameters": 100, "seconds": 2.0, "predictions": {},
    }
    root.mkdir(parents=True)
    (root / "result.json").write_text(json.dumps({**result, **changes}))
    return root


def _run_report(run: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, list[str], list[str]]:
    """`tacfn dashboard RUN`: the page, its views in order (a note's id ends in -note), and stderr's lines."""
    from tacfn.cli import main

    assert main(["dashboard", str(run)]) == 0
    out, err = capsys.readouterr()
    assert out == f"dashboard: {run / 'dashboard.html'}\n"
    page = (run / "dashboard.html").read_text()
    return page, re.findall(r'<div (?:class="view-note" )?id="(view-\d(?:-note)?)"', page), err.splitlines()


def test_run_report_of_a_complete_run_draws_every_view(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page, views, err = _run_report(_run_folder(tmp_path / "run"), capsys)
    assert views == ["view-0", "view-1", "view-2"] and err == []
    assert "validation 0.500, test 0.750" in page and not re.search(r"<script[^>]*\bsrc=", page)


def test_run_report_says_a_one_modality_run_has_no_modality_to_leave_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page, views, err = _run_report(_run_folder(tmp_path / "run", test_missing_modality={}), capsys)
    note = "Score with a modality missing: the model reads one modality, so there is none to leave out"
    assert views == ["view-0", "view-1", "view-2-note"]
    assert html.escape(note) in page and err == [f"tacfn: note: {note}"]


def test_run_report_says_why_a_per_task_run_has_no_confusion_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test = {"happy_accuracy": 0.8, "happy_weighted_f1": 0.7, "sad_accuracy": 0.6, "sad_weighted_f1": 0.5,
            "accuracy": 0.7, "weighted_f1": 0.6, "score": 0.7}  # IEMOCAP's: one binary task per emotion
    page, views, err = _run_report(_run_folder(tmp_path / "run", test=test), capsys)
    note = "Confusion matrix and per-class accuracy: the test split is scored per task (happy, sad) without a confusion matrix in result.json"
    assert views == ["view-0", "view-1-note", "view-2"]
    assert html.escape(note) in page and err == [f"tacfn: note: {note}"]


def test_run_report_of_a_run_that_diverged_before_any_epoch_says_so_in_each_view(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = "non-finite training loss (nan) in epoch 1, step 3"
    run = _run_folder(tmp_path / "run", status="diverged", error=error, best_epoch=None, epochs_run=0, val={}, test={},
                      test_missing_modality={}, history=[])
    page, views, err = _run_report(run, capsys)
    untested = f"no epoch was chosen on validation, so nothing was scored on test (status diverged: {error})"
    notes = [
        f"Learning curves: no epoch finished (status diverged: {error})",
        f"Confusion matrix and per-class accuracy: {untested}",
        f"Score with a modality missing: {untested}",
    ]
    assert views == ["view-0-note", "view-1-note", "view-2-note"]
    assert all(html.escape(note) in page for note in notes) and err == [f"tacfn: note: {note}" for note in notes]
    assert "validation not scored, test not scored" in page and "nan," not in page
