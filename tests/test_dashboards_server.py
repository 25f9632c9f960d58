"""The live dashboard server: routes, re-rendering when trials change, binding."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from _stores import write_search_store

import dashboards
from dashboards._loading import state_version
from dashboards._server import DashboardServer
from tacfn.errors import ConfigError, DataError
from tacfn.store import ExperimentStore


@pytest.fixture(scope="module")
def running_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A search still running; only test_figures_follow_new_trials adds to it, and it runs last."""
    return write_search_store(tmp_path_factory.mktemp("live") / "quick", trials=12, recorded=7, running=1)


@pytest.fixture(scope="module")
def server(running_search: Path) -> Iterator[DashboardServer]:
    server = dashboards.make_server(running_search, port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _get(server: DashboardServer, path: str) -> tuple[str, str]:
    host, port = server.server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=60) as response:
        return response.headers["Content-Type"], response.read().decode()


def _history_points(figures: dict) -> int:
    history = next(f for f in figures["figures"] if f["id"] == "exp0-history")
    return sum(len(t["x"]) for t in history["figure"]["data"] if t.get("mode") == "markers")


def test_binds_to_localhost_by_default(server: DashboardServer) -> None:
    assert server.server_address[0] == "127.0.0.1"


def test_page_is_live_and_self_contained(server: DashboardServer) -> None:
    kind, page = _get(server, "/")
    assert kind.startswith("text/html")
    assert "id=\"live-status\"" in page and '"live": true' in page
    assert "<script src" not in page


def test_renders_once_per_version(server: DashboardServer) -> None:
    first, second = server.live.sections(), server.live.sections()
    assert first[0] == second[0] and first[1] is second[1]


def test_unknown_paths_are_404(server: DashboardServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(server, "/trials.parquet")
    assert info.value.code == 404


def test_refuses_a_folder_that_is_not_an_experiment(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a tacfn experiment folder"):
        dashboards.make_server(tmp_path, port=0)


def test_a_busy_port_is_a_one_line_error(running_search: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        message = f"cannot serve the dashboard on 127.0.0.1:{port} .*choose another --port"
        with pytest.raises(ConfigError, match=message):
            dashboards.make_server(running_search, port=port)


def test_figures_follow_new_trials(server: DashboardServer, running_search: Path) -> None:
    kind, state = _get(server, "/state.json")
    assert kind == "application/json" and json.loads(state) == {"version": state_version(running_search)}
    before = json.loads(_get(server, "/figures.json")[1])
    assert before["version"] == json.loads(state)["version"]
    assert _history_points(before) == 5  # 7 recorded: 1 running, 1 failed
    assert "In progress: 6 trials finished of 12 planned, 1 running." in before["notices"]["exp0-notices"]
    importance = before["notices"]["exp0-importance-note"]  # a note where the figure will be
    assert "needs at least 10 completed trials with a val_score; this experiment has 5" in importance

    now = datetime.now(timezone.utc)
    row = {"trial_id": "trial_new", "status": "completed", "val_score": 0.9, "started_at": now, "finished_at": now}
    ExperimentStore.open(running_search).record_trial(row, [{"epoch": 1, "val_score": 0.9, "train_score": 0.95}])
    after_state = json.loads(_get(server, "/state.json")[1])
    assert after_state["version"] != before["version"]
    after = json.loads(_get(server, "/figures.json")[1])
    assert after["version"] == after_state["version"]
    assert _history_points(after) == 6
    assert "7 trials finished of 12 planned" in after["notices"]["exp0-notices"]
    assert after["slots"] == before["slots"]  # same figures and notes in the same places: the page updates their text
    assert "this experiment has 6" in after["notices"]["exp0-importance-note"]
