"""The dashboard in a real browser: headless Chromium draws every view, cross-filters, logs no error.

One Chromium run opens a copy of the generated page with a probe script in its head. The
probe records console errors, uncaught errors and every resource the page loaded in
attributes of <html>; once the page reports ``dashboard-rendered`` it constrains the score
axis of the parallel coordinates and then emits a box selection on the history, recording
what the other views show after each. The test reads all of it from ``--dump-dom`` and
saves a screenshot under test-artifacts/.

Parallel coordinates draw with WebGL; without a GPU Chromium needs
``--enable-unsafe-swiftshader`` (software WebGL) for them, which is fine for a trusted local file.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from _stores import write_ablation_store, write_search_store, write_seed_aware_store

import dashboards
from dashboards._page import PAGE_TOP_K

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed (CI installs Debian's chromium package)"),
]

ERRORS_PROBE = """<script>
(function () {
  var root = document.documentElement, errors = [];
  function record(message) { errors.push(String(message)); root.dataset.errors = JSON.stringify(errors); }
  root.dataset.errors = "[]";
  var original = console.error;
  console.error = function () {
    record(Array.prototype.join.call(arguments, " "));
    original.apply(console, arguments);
  };
  window.addEventListener("error", function (e) { record(e.message || e); });
  window.addEventListener("unhandledrejection", function (e) { record("unhandled rejection: " + e.reason); });
  document.addEventListener("dashboard-rendered", function () {
    var resources = performance.getEntriesByType("resource").map(function (r) { return r.name; });
    root.dataset.resources = JSON.stringify(resources);
  }, { once: true });
})();
</script>"""

PROBE = ERRORS_PROBE + """<script>
(function () {
  var root = document.documentElement;
  function state() {
    var board = document.getElementById("exp0-leaderboard");
    return {
      history: document.getElementById("exp0-history").dataset.selected,
      slices: document.getElementById("exp0-slices").dataset.selected,
      timeline: document.getElementById("exp0-timeline").dataset.selected,
      leaderboard: board.data[0].cells.values[0].length,
      status: document.getElementById("selection-status").textContent
    };
  }
  document.addEventListener("dashboard-rendered", function () {
    var parallel = document.getElementById("exp0-parallel");
    var update = {};
    var score = parallel.data[0].dimensions.length - 1;  // the last axis
    update["dimensions[" + score + "].constraintrange"] = [[window.PROBE.low, window.PROBE.high]];
    Plotly.restyle(parallel, update, [0]).then(function () {
      root.dataset.afterParallel = JSON.stringify(state());
      var history = document.getElementById("exp0-history");
      history.emit("plotly_selected", { points: window.PROBE.ids.map(function (id) { return { customdata: id }; }) });
      root.dataset.afterHistory = JSON.stringify(state());
    }).catch(function (err) { console.error("probe: " + err); });
  }, { once: true });
})();
</script>"""


def _attribute(dom: str, name: str) -> object:
    match = re.search(rf'<html[^>]*\s{name}="([^"]*)"', dom)
    assert match, f"the page never set {name} (did it finish rendering?)"
    return json.loads(html.unescape(match.group(1)))


def _segments(dom: str, ids: list[str]) -> dict[str, str]:
    """The markup of each view: from its id to the next view's id."""
    starts = {i: dom.index(f'id="{i}"') for i in ids}
    ordered = sorted(starts, key=starts.get)
    ends = [starts[i] for i in ordered[1:]] + [len(dom)]
    return {i: dom[starts[i] : end] for i, end in zip(ordered, ends)}


def _chromium(page: Path, screenshot: Path, profile: Path, height: int) -> subprocess.CompletedProcess[str]:
    """Open ``page`` in headless Chromium; its DOM once rendered on stdout, a screenshot saved."""
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot.unlink(missing_ok=True)
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-unsafe-swiftshader",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        f"--window-size=1400,{height}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_every_view_renders_cross_filters_and_logs_no_error(tmp_path: Path) -> None:
    search_dir = write_search_store(tmp_path / "quick", objectives=["num_parameters"])
    ablation_dir = write_ablation_store(tmp_path / "fusion_ablation")
    page_path = dashboards.write_dashboard([search_dir, ablation_dir], tmp_path / "dashboard.html")
    page = page_path.read_text()
    view_ids = re.findall(r'<div class="view" id="([^"]+)"', page)
    assert len(view_ids) == 22  # comparison, 11 search views, 10 ablation views

    search = dashboards.load_experiment(search_dir)
    scores = search.completed["val_score"]
    low, high = scores.median(), scores.max()
    in_range = search.completed.filter(pl.col("val_score").is_between(low, high))["trial_id"].to_list()
    board_ids = dashboards.leaderboard(search, PAGE_TOP_K)["trial_id"].to_list()
    picked = search.completed.sort("trial_id")["trial_id"].head(3).to_list()
    probe = f"<script>window.PROBE = {json.dumps({'low': low, 'high': high, 'ids': picked})};</script>{PROBE}"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + probe, 1))

    screenshot = ARTIFACTS / "dashboard.png"
    done = _chromium(probed, screenshot, tmp_path / "profile", height=9600)
    dom = done.stdout
    assert done.returncode == 0 and dom, done.stderr[-3000:]

    assert _attribute(dom, "data-errors") == []
    uncaught = [line for line in done.stderr.splitlines() if "CONSOLE" in line and "Uncaught" in line]
    assert not uncaught
    resources = _attribute(dom, "data-resources")
    assert not [r for r in resources if not r.startswith(("file:", "data:", "blob:"))]

    for view, markup in _segments(dom, view_ids).items():
        assert 'class="main-svg"' in markup, f"{view} has no rendered plot"

    after_parallel = _attribute(dom, "data-after-parallel")
    n = str(len(in_range))
    assert (after_parallel["history"], after_parallel["slices"], after_parallel["timeline"]) == (n, n, n)
    assert after_parallel["leaderboard"] == len(set(board_ids) & set(in_range))
    assert after_parallel["status"].startswith(f"{n} trials selected in parallel")
    after_history = _attribute(dom, "data-after-history")
    assert (after_history["slices"], after_history["timeline"]) == ("3", "3")
    assert after_history["leaderboard"] == len(set(board_ids) & set(picked))
    assert after_history["status"].startswith("3 trials selected in history")

    assert screenshot.is_file() and screenshot.stat().st_size > 50_000


SEEDS_PROBE = ERRORS_PROBE + """<script>
document.addEventListener("dashboard-rendered", function () {
  function rows() { return document.getElementById("exp0-configurations").data[0].cells.values[0].length; }
  function highlighted(id) {  // the points a view highlights, over its traces of ids
    return document.getElementById(id).data.reduce(function (n, trace) {
      return n + (trace.customdata && trace.selectedpoints ? trace.selectedpoints.length : 0);
    }, 0);
  }
  function status() { return document.getElementById("selection-status").textContent; }
  var state = { rows: rows() };
  var ids = function (list) { return { points: list.map(function (id) { return { customdata: id }; }) }; };
  document.getElementById("exp0-history").emit("plotly_selected", ids(window.PROBE.configs));
  state.afterHistory = { rows: rows(), timeline: highlighted("exp0-timeline"), replicates: highlighted("exp0-replicates"), status: status() };
  document.getElementById("exp0-timeline").emit("plotly_selected", ids([window.PROBE.trial]));
  state.afterTimeline = { rows: rows(), history: highlighted("exp0-history"), status: status() };
  document.documentElement.dataset.seeds = JSON.stringify(state);
}, { once: true });
</script>"""


def test_a_seed_aware_search_ranks_configurations_and_cross_filters_them_with_trials(tmp_path: Path) -> None:
    """Configurations selected in the history select their replicates in the trial views, and
    a trial selected in the timeline selects its configuration in the leaderboard."""
    root = write_seed_aware_store(tmp_path / "seeds")
    page = dashboards.write_dashboard([root], tmp_path / "seeds.html").read_text()
    view_ids = re.findall(r'<div class="view" id="([^"]+)"', page)
    assert view_ids[:4] == ["exp0-configurations", "exp0-replicates", "exp0-history", "exp0-parallel"]
    exp = dashboards.load_experiment(root)
    board = dashboards.configuration_leaderboard(exp)
    configs = board["config_hash"].head(2).to_list()
    raced = board.filter(pl.col("status") == "pruned after 1")["config_hash"][0]
    trial = exp.trials.filter(pl.col("config_hash") == raced)["trial_id"][0]
    probe = f"<script>window.PROBE = {json.dumps({'configs': configs, 'trial': trial})};</script>{SEEDS_PROBE}"
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + probe, 1))
    done = _chromium(probed, ARTIFACTS / "dashboard-seeds.png", tmp_path / "profile", height=6400)
    dom = done.stdout
    assert done.returncode == 0 and dom, done.stderr[-3000:]

    assert _attribute(dom, "data-errors") == []
    assert not [r for r in _attribute(dom, "data-resources") if not r.startswith(("file:", "data:", "blob:"))]
    for view, markup in _segments(dom, view_ids).items():
        assert 'class="main-svg"' in markup, f"{view} has no rendered plot"
    state = _attribute(dom, "data-seeds")
    replicates = exp.trials.filter(pl.col("config_hash").is_in(configs)).height
    assert state["rows"] == board.height == 8
    after_history = state["afterHistory"]
    assert (after_history["rows"], after_history["timeline"]) == (2, replicates) == (2, 6)
    assert after_history["replicates"] == replicates + 2  # their replicates' points and the configurations' marks
    assert after_history["status"].startswith("2 configurations selected in history")
    after_timeline = state["afterTimeline"]
    assert (after_timeline["rows"], after_timeline["history"]) == (1, 1)
    assert after_timeline["status"].startswith("1 trials selected in timeline")


NOTES_PROBE = """<script>
document.addEventListener("dashboard-rendered", function () {
  var notes = Array.prototype.map.call(document.querySelectorAll(".view-note"), function (div) {
    var box = div.getBoundingClientRect();
    return { id: div.id, text: div.textContent, height: box.height, top: box.top };
  });
  var views = Array.prototype.map.call(document.querySelectorAll(".view"), function (div) {
    return { id: div.id, top: div.getBoundingClientRect().top, drawn: !!div.querySelector(".main-svg") };
  });
  document.documentElement.dataset.notes = JSON.stringify(notes);
  document.documentElement.dataset.views = JSON.stringify(views);
}, { once: true });
</script>"""


def test_notes_say_in_the_browser_what_the_page_cannot_show(tmp_path: Path) -> None:
    """A running search without its epochs table: each view with nothing to draw shows a note in
    its place, between the views drawn before and after it."""
    root = write_search_store(tmp_path / "running", trials=30, recorded=12, running=2)
    (root / "epochs.parquet").unlink()
    page = dashboards.write_dashboard([root], tmp_path / "notes.html").read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + NOTES_PROBE, 1))
    done = _chromium(probed, ARTIFACTS / "dashboard-notes.png", tmp_path / "profile", height=4800)
    assert done.returncode == 0 and done.stdout, done.stderr[-3000:]

    notes = {n["id"]: n for n in _attribute(done.stdout, "data-notes")}
    untested = "no config is scored on test yet (the search scores the one it chooses once every trial has finished)"
    assert {i: n["text"] for i, n in notes.items()} == {
        "exp0-importance-note": "Parameter importance: needs at least 10 completed trials with a val_score; "
        "this experiment has 8",
        "exp0-curves-note": f"Learning curves: epochs.parquet is missing ({root / 'epochs.parquet'})",
        "exp0-confusion-note": f"Confusion matrix: {untested}",
        "exp0-per-class-note": f"Per-class scores: {untested}",
        "exp0-missing-modality-note": f"Score with a modality missing: {untested}",
    }
    assert all(n["height"] > 20 for n in notes.values())  # laid out and visible, not an empty box
    views = {v["id"]: v for v in _attribute(done.stdout, "data-views")}
    assert all(v["drawn"] for v in views.values())
    assert views["exp0-slices"]["top"] < notes["exp0-importance-note"]["top"] < views["exp0-timeline"]["top"]
    assert notes["exp0-missing-modality-note"]["top"] < views["exp0-timeline"]["top"]
