"""The live dashboard: a small standard-library HTTP server that follows a running experiment.

Routes: ``/`` the page in live mode, ``/state.json`` ``{"version": ...}`` (modification times
of ``experiment.json`` and ``trials.parquet``; the writer replaces trials last) and
``/figures.json`` the figures and markup. The page polls ``state.json`` and fetches the
figures only when the version changes; the server renders once per version, so many open
pages cost one ``stat`` per poll. It binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from tacfn.errors import ConfigError, DataError
from tacfn.store import Location

from ._loading import Notice, load_experiment, state_version
from ._page import Section, build_sections, figures_payload, render_page


class LiveDashboard:
    """Renders one experiment folder, cached per :func:`~dashboards._loading.state_version`."""

    def __init__(self, exp_dir: str | Path) -> None:
        self.location = Location(exp_dir)
        self.exp_dir = self.location.root
        load_experiment(self.exp_dir)  # DataError now if this is not an experiment folder
        self._lock = threading.Lock()
        self._version: str | None = None
        self._sections: list[Section] = []

    def version(self) -> str:
        return state_version(self.exp_dir)

    def sections(self) -> tuple[str, list[Section]]:
        """The current version and its sections, rendered again only when the version changed."""
        version = self.version()
        with self._lock:
            if version != self._version:
                try:
                    self._sections = build_sections([self.exp_dir])
                except DataError as exc:  # the folder went away while serving
                    problem = [Notice("error", str(exc))]
                    self._sections = [Section("exp0", self.location.name, str(self.exp_dir), problem, [])]
                self._version = version
            return self._version, self._sections

    def page(self) -> str:
        version, sections = self.sections()
        return render_page(sections, version=version, live=True)

    def figures_json(self) -> str:
        version, sections = self.sections()
        return figures_payload(sections, version=version, live=True)

    def state_json(self) -> str:
        return json.dumps({"version": self.version()})


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        live = self.server.live
        routes = {
            "/": (live.page, "text/html; charset=utf-8"),
            "/state.json": (live.state_json, "application/json"),
            "/figures.json": (live.figures_json, "application/json"),
        }
        route = routes.get(urlsplit(self.path).path)
        if route is None:
            self.send_error(404, "not found: the dashboard serves /, /state.json and /figures.json")
            return
        body = route[0]().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", route[1])
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        """Quiet: a polling page would print a line every two seconds."""


class DashboardServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that serves one :class:`LiveDashboard`."""

    daemon_threads = True
    server_address: tuple[str, int]  # an AF_INET server's (host, port)

    def __init__(self, address: tuple[str, int], live: LiveDashboard) -> None:
        self.live = live
        super().__init__(address, _Handler)


def make_server(exp_dir: str | Path, host: str = "127.0.0.1", port: int = 8050) -> DashboardServer:
    """A server for ``exp_dir``, bound but not yet serving (``port=0`` picks a free port)."""
    if not 0 <= port <= 65535:  # the socket would raise OverflowError, not OSError
        raise ConfigError(f"`0 <= --port <= 65535` must hold, but got --port {port}")
    live = LiveDashboard(exp_dir)
    try:
        return DashboardServer((host, port), live)
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"cannot serve the dashboard on {host}:{port} ({reason}); choose another --port") from exc


def serve(exp_dir: str | Path, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve the live dashboard of ``exp_dir`` until interrupted (Ctrl-C)."""
    server = make_server(exp_dir, host, port)
    url_host, url_port = server.server_address[:2]
    print(f"dashboard: http://{url_host}:{url_port}/ (refreshes as trials finish; Ctrl-C to stop)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: bound to {host}: anyone who can reach this machine can read these results", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
