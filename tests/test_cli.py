"""The ``tacfn`` command line, as a user runs it."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tacfn.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_model_info_paper(capsys):
    code, out, _ = _run(capsys, "model", "info", "paper")
    assert code == 0
    assert "(B, 2048, 2, 7, 7)" in out and "(B, 64, 26)" in out
    assert "26,301,417" in out
    assert "backbone (default): finetune" in out


def test_model_info_frozen_counts_only_fusion_as_trainable(capsys):
    code, out, _ = _run(capsys, "model", "info", "lite", "--fusion", "late_product", "--backbone", "frozen")
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("fusion + head", "trainable"))}
    assert lines["trainable"].split()[-1] == lines["fusion"].split()[-1]


def test_model_info_shows_only_the_settings_the_block_reads(capsys):
    code, out, _ = _run(capsys, "model", "info", "lite", "--fusion", "concat")
    assert code == 0
    assert out.splitlines()[-1] == "fusion config: head_dropout=0.4"
    code, out, _ = _run(capsys, "model", "info", "lite", "--fusion", "tacfn")
    assert "heads=4" in out.splitlines()[-1] and "residual=True" in out.splitlines()[-1]


def test_model_list(capsys):
    code, out, _ = _run(capsys, "model", "list")
    assert code == 0 and "tacfn" in out and "late_average" in out and "iemocap" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model", "info", "lite", "--fusion", "nope"], "unknown fusion block 'nope'; valid:"),
        (["model", "info", "huge"], "unknown preset 'huge'"),
        (["data", "prepare", "/nonexistent/ravdess", "/tmp/out-never"], "/nonexistent/ravdess"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert err.startswith("tacfn: error: ") and message in err
    assert err.count("\n") == 1


def test_train_then_dashboard(capsys, prepared_lite: Path, tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{preset: lite}}\ndata: {{path: {prepared_lite}, cache_dir: {tmp_path}}}\ntrain: {{epochs: 5}}\n")
    out_dir = tmp_path / "run"
    code, out, _ = _run(capsys, "train", str(config), "--out", str(out_dir), "--set", "train.epochs=2", "--set", "train.batch_size=8")
    assert code == 0
    assert "epoch   1/2" in out and "epoch   2/2" in out and "test score" in out
    result = json.loads((out_dir / "result.json").read_text())
    assert result["epochs_run"] == 2 and result["status"] == "completed"
    code, out, _ = _run(capsys, "dashboard", str(out_dir))
    assert code == 0
    page = (out_dir / "dashboard.html").read_text()
    assert "Learning curves" in page and "Test score with a modality missing" in page
    assert not re.search(r"<script[^>]*\bsrc=", page), "plotly.js is inlined so the page works offline"


def test_train_bad_config_exits_2(capsys, tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {preset: lite, fusion: {heads: 3}}\n")
    code, _, err = _run(capsys, "train", str(config))
    assert code == 2 and "`heads` must divide `d`" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "train", str(tmp_path / "run.yaml"), "--set", "train.epochs")
    assert code == 2 and "--set expects KEY=VALUE" in err


def test_dashboard_on_a_folder_without_results(capsys, tmp_path: Path):
    code, _, err = _run(capsys, "dashboard", str(tmp_path))
    assert code == 2 and "not a tacfn experiment folder" in err


def test_prepare_reports_corrupt_files_by_name(capsys, synthetic_ravdess: Path, tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(synthetic_ravdess, tree)
    victim = sorted(tree.glob("Actor_01/01-*.mp4"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    code, out, _ = _run(capsys, "data", "prepare", str(tree), str(tmp_path / "prepared"), "--workers", "1")
    assert code == 0
    assert f"skipped {victim}" in out
    assert "prepared " in out.splitlines()[-1]


def test_console_entry_point_exit_status(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "tacfn.cli", "train", str(tmp_path / "absent.yaml")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("tacfn: error:") and "absent.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def _search_folder(path: Path) -> Path:
    """An experiment folder as `tacfn search` creates it, before its first trial."""
    from tacfn.store import ExperimentStore
    from tacfn.search._space import parse_space

    spec = parse_space({
        "name": "folder",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(path.parent / "absent-data")}},
        "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
        "search": {"trials": 4},
    }, "folder.yaml")
    ExperimentStore.create(path, "search", spec.name, spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    return path


def test_resuming_a_moved_search_folder_is_refused(capsys, tmp_path: Path):
    """Ray's saved state holds the folder's absolute paths: a copy would write into the original."""
    original = _search_folder(tmp_path / "original")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    code, _, err = _run(capsys, "search", "--resume", str(copy))
    assert code == 2 and err.count("\n") == 1
    assert f"--resume {copy}: this search was created in {original}" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["quickstart"], "drop SPACE"),
        (["--out", "elsewhere"], "drop --out"),
        (["--trials", "5"], "--trials: a resumed search runs the 4 trials it was started with; drop --trials"),
    ],
)
def test_resume_refuses_options_it_would_ignore(capsys, tmp_path: Path, extra, message):
    folder = _search_folder(tmp_path / "exp")
    code, _, err = _run(capsys, "search", "--resume", str(folder), *extra)
    assert code == 2 and err.startswith("tacfn: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "file"),
    [
        ("search", {"name": "big", "space": {"train.lr": {"float": [1e-4, 1e-2]}}, "search": {"trials": 2, "resources": {"cpu": 4096}}}),
        ("ablate", {"name": "big", "baseline": "a", "variants": {"a": {}, "b": {"model.fusion.name": "concat"}}, "resources": {"cpu": 4096}}),
    ],
)
def test_a_trial_larger_than_this_machine_is_refused_before_anything_is_written(capsys, monkeypatch, tmp_path: Path, command, file):
    """On the local Ray runtime tacfn starts itself, such a trial would wait forever."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = tmp_path / "big.yaml"
    path.write_text(json.dumps({**file, "base": {"model": {"preset": "lite"}, "data": {"path": str(tmp_path / "absent-data")}}}))
    code, _, err = _run(capsys, command, str(path), "--out", str(tmp_path / "exp"))
    assert code == 2 and err.count("\n") == 1
    assert "a trial needs 4096 CPUs and 0 GPUs, but this machine has" in err
    assert not (tmp_path / "exp").exists()


def test_tacfn_warnings_are_one_line(tmp_path: Path):
    """A clip without landmarks is centre-cropped with a warning: one `tacfn: warning:` line,
    not Python's file, line number and source excerpt."""
    from tacfn.data.synth import write_synthetic_ravdess

    raw = write_synthetic_ravdess(tmp_path / "raw", actors=1, clips_per_actor=2, seed=0, workers=1)
    next(raw.glob("Actor_01/01-*.csv")).unlink()
    proc = subprocess.run(
        [sys.executable, "-m", "tacfn.cli", "data", "prepare", str(raw), str(tmp_path / "out"), "--workers", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    warning = [line for line in proc.stderr.splitlines() if "landmarks" in line]
    assert len(warning) == 1 and warning[0].startswith("tacfn: warning: 1 of 2 clips had no usable facial landmarks")
    assert "LandmarkFallbackWarning" not in proc.stderr and "warnings.warn" not in proc.stderr


def test_output_cut_short_by_its_reader_is_no_traceback():
    proc = subprocess.run(
        f"{shlex.quote(sys.executable)} -m tacfn.cli model info paper | head -1", shell=True, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.count("\n") == 1 and proc.stderr == ""
