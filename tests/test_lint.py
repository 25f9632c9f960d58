"""The linter (ruff, configured in pyproject.toml) passes, and its security rules catch what
they stand for: unpickling and unsafe YAML loads are found by the rules, not by grep."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_code_passes_the_linter():
    proc = _ruff(".")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_security_rules_find_unpickling_unsafe_yaml_and_eval(tmp_path: Path):
    source = tmp_path / "unsafe.py"
    source.write_text(
        "import pickle\nimport yaml\n\n"
        "def read(path, text):\n"
        "    yaml.load(text, Loader=yaml.Loader)\n"
        "    yaml.load(text)\n"
        "    eval(text)\n"
        "    return pickle.loads(path.read_bytes())\n"
    )
    proc = _ruff("--config", str(REPO / "pyproject.toml"), str(source))
    found = sorted({line.split(" ")[1] for line in proc.stdout.splitlines() if ": S" in line})
    assert proc.returncode == 1 and found == ["S301", "S307", "S506"], proc.stdout
