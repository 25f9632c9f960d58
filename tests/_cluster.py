"""A multi-node Ray cluster on this machine for tests, through ``platform/local_cluster.sh``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "platform" / "local_cluster.sh"
PORT_BASES = range(20000, 30000, 1500)  # each cluster of <= 4 worker nodes spans 1,000 + 200 * 5 ports


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of ``ray start``, ``ray job submit`` and drivers: token auth off on
    all of them, and this virtualenv's executables first on PATH."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def tune_results(out: Path) -> list[dict]:
    """Every result a search's trials reported so far (Tune's ``result.json`` per trial folder)."""
    rows = []
    for path in (out / "ray").glob("*/result.json"):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written
                break
    return rows


def tacfn(*args: str) -> list[str]:
    return [sys.executable, "-m", "tacfn.cli", *args]


@dataclass(frozen=True)
class Cluster:
    """A running local cluster: its GCS port, address, dashboard URL and state file."""

    port: int
    state: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.port + 1}"

    def process_groups(self) -> dict[str, int]:
        """Node name (``head``, ``node_1``, ...) -> the process group of its Ray processes."""
        lines = [line.split() for line in self.state.read_text().splitlines()]
        return {name: int(value) for name, value in lines if name == "head" or name.startswith("node_")}


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_cluster(workers: int, cpus: int, state_dir: Path, **env: str) -> Cluster:
    """Start a head and ``workers`` worker nodes of ``cpus`` CPUs each on free ports."""
    for port in PORT_BASES:
        state = state_dir / f"cluster-{port}.state"
        if all(_free(p) for p in (port, port + 1, port + 2, port + 10)):
            args = ["start", "--workers", str(workers), "--cpus", str(cpus), "--port", str(port), "--state", str(state)]
            proc = subprocess.run(["bash", str(SCRIPT), *args], env=ray_env(**env), capture_output=True, text=True, timeout=240)
            if proc.returncode != 0:
                raise RuntimeError(f"local_cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
            return Cluster(port, state)
    raise RuntimeError(f"no free ports for a local cluster in {list(PORT_BASES)}")


def stop_cluster(cluster: Cluster) -> None:
    subprocess.run(["bash", str(SCRIPT), "stop", "--port", str(cluster.port), "--state", str(cluster.state)], env=ray_env(), timeout=120, check=True)


def space_file(
    tmp_path: Path, data: Path, *, trials: int, epochs: int = 2, backbone: str = "frozen", name: str = "tiny", space: dict | None = None, **search
) -> Path:
    """A small search space on the lite preset, data paths absolute (any node finds them).

    With ``backbone: frozen`` an epoch takes a fraction of a second; ``finetune`` trains
    the encoders too: several seconds an epoch on one CPU.
    """
    spec = {
        "name": name,
        "base": {
            "model": {"preset": "lite", "backbone": backbone},
            "data": {"path": str(data.resolve()), "cache_dir": str((tmp_path / "cache").resolve())},
            "train": {"epochs": epochs, "batch_size": 8},
        },
        "space": space or {"model.fusion.name": {"choice": ["tacfn", "concat"]}, "train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "search": {"trials": trials, "concurrency": 2, "scheduler": "none", "seed": 0, "resources": {"cpu": 1}, **search},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
