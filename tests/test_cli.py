"""The ``tacfn`` command line, as a user runs it."""

from __future__ import annotations

import errno
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from tacfn import cli
from tacfn.cli import main
from tacfn.errors import ConfigError, DataError
from tacfn.store import ExperimentStore


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


@pytest.mark.parametrize(
    ("block", "params", "options"),
    [("mcbp", "8,200", "head_dropout=0.4, sketch_dim=1024"), ("mmtm", "15,016", "head_dropout=0.4, reduction=4"),
     ("msaf", "7,372", "dim=16, head_dropout=0.4, reduction=4")],
)
def test_model_info_counts_the_zoo_blocks(capsys, block, params, options):
    code, out, _ = _run(capsys, "model", "info", "lite", "--fusion", block)
    assert code == 0
    fusion = next(line for line in out.splitlines() if line.startswith("fusion + head"))
    assert fusion.split()[-1] == params
    assert out.splitlines()[-1] == f"fusion config: {options}"


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


def test_store_compact_folds_the_log_into_the_three_tables(capsys, tmp_path: Path):
    store = ExperimentStore.create(tmp_path / "exp", "search", "s", {})
    for i in range(3):
        store.record_trial({"trial_id": f"t{i}", "status": "completed", "val_score": 0.1 * i}, [{"epoch": 1, "val_score": 0.1}])
    assert not (tmp_path / "exp" / "trials.parquet").exists() and len(list((tmp_path / "exp" / "log").iterdir())) == 6
    assert main(["store", "compact", str(tmp_path / "exp")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'exp'}: compacted into trials.parquet, epochs.parquet and predictions.parquet\n"
    assert pl.read_parquet(tmp_path / "exp" / "trials.parquet")["trial_id"].to_list() == ["t0", "t1", "t2"]
    assert list((tmp_path / "exp" / "log").iterdir()) == []
    assert main(["store", "compact", str(tmp_path / "exp")]) == 0
    assert capsys.readouterr().out.endswith(": nothing to compact\n")


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
    code, out, _ = _run(capsys, "data", "prepare", str(tree), str(tmp_path / "prepared"), "--jobs", "1")
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
    code, _, err = _run(capsys, "search", "--out", str(copy), "--resume")
    assert code == 2 and err.count("\n") == 1
    assert f"--resume {copy}: this search was created in {original}" in err


def test_the_old_resume_spelling_still_works_with_a_note(capsys, tmp_path: Path):
    """`search --resume DIR` reads as `search --out DIR --resume`: the same check refuses the moved copy."""
    original = _search_folder(tmp_path / "original")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    code, _, err = _run(capsys, "search", "--resume", str(copy))
    assert code == 2
    assert err.splitlines() == [
        "tacfn: note: --resume DIR is now --out DIR --resume",
        (f"tacfn: error: --resume {copy}: this search was created in {original}, and Ray's saved state writes there; "
         f"resume it from {original} (move the folder back), or start a new search"),
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["quickstart"], "quickstart: differs from the search in"),
        (["--trials", "5"], "--trials: a resumed search runs the 4 trials it was started with; drop --trials"),
        (["--set", "train.lr=0.5"], "--set train.lr=0.5: the search in"),
    ],
)
def test_resume_refuses_options_that_would_change_the_search(capsys, tmp_path: Path, extra, message):
    folder = _search_folder(tmp_path / "exp")
    code, _, err = _run(capsys, "search", *extra, "--out", str(folder), "--resume")
    assert code == 2 and err.startswith("tacfn: error: ") and message in err and err.count("\n") == 1


def test_resume_of_a_folder_from_before_samplers_accepts_its_space(capsys, tmp_path: Path):
    """A search recorded before `search.sampler` existed ran TPE, the default: its SPACE, given
    with --resume, is the same search (it then fails on its absent data, not on the SPACE)."""
    from tacfn.search import experiment_spec
    from tacfn.search._space import parse_space

    data = {
        "name": "old",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(tmp_path / "absent-data"), "cache_dir": str(tmp_path / "cache")}},
        "space": {"train.lr": {"float": [1e-4, 1e-2], "log": True}},
        "search": {"trials": 4},
    }
    recorded = experiment_spec(parse_space(data, "old.yaml"))
    del recorded["search"]["sampler"]
    ExperimentStore.create(tmp_path / "exp", "search", "old", recorded)
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    code, _, err = _run(capsys, "search", str(tmp_path / "old.yaml"), "--out", str(tmp_path / "exp"), "--resume")
    assert code == 2 and "differs from the search" not in err and "absent-data" in err, err


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
        [sys.executable, "-m", "tacfn.cli", "data", "prepare", str(raw), str(tmp_path / "out"), "--jobs", "1"],
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


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tacfn.cli", *argv], check=False, capture_output=True, text=True, timeout=500, cwd=cwd)


def test_search_set_is_stored_and_out_resume_continues(prepared_lite: Path, tmp_path: Path):
    """`--set` changes the base the search records and runs; `--out DIR --resume` continues a
    search in DIR (here one stopped before its first trial, which it starts over), and accepts
    a `--set` that repeats what the search started with."""
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({
        "name": "setme",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(prepared_lite), "cache_dir": str(tmp_path / "cache")},
                 "train": {"epochs": 3, "batch_size": 8}},
        "space": {"train.lr": {"float": [1.0e-4, 1.0e-2], "log": True}},
        "search": {"trials": 1, "scheduler": "none"},
    }))
    done = tmp_path / "done"
    proc = _cli("search", str(space), "--out", str(done), "--set", "train.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    experiment = json.loads((done / "experiment.json").read_text())
    assert experiment["spec"]["base"]["train"] == {"epochs": 1, "batch_size": 8}
    assert pl.from_arrow(ExperimentStore.open(done).epochs())["epoch"].to_list() == [1], "the trial ran the --set epochs"

    out = tmp_path / "exp"  # a search stopped before its first trial: experiment.json and nothing else
    out.mkdir()
    (out / "experiment.json").write_text(json.dumps({**experiment, "location": str(out)}))
    proc = _cli("search", "--out", str(out), "--resume", "--set", "train.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "the search stopped before its first trial; starting it over" in proc.stdout
    assert "tacfn: note:" not in proc.stderr
    assert ExperimentStore.open(out).trials()["status"].to_pylist() == ["completed"]


def _plan_file(tmp_path: Path, data: Path) -> Path:
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "name": "setme",
        "base": {"model": {"preset": "lite"}, "data": {"path": str(data), "cache_dir": str(tmp_path / "cache")},
                 "train": {"epochs": 3, "batch_size": 8}},
        "baseline": "tacfn",
        "variants": {"tacfn": {}, "concat": {"model.fusion.name": "concat"}},
        "seeds": [0],
    }))
    return plan


def test_ablate_set_is_stored_and_resume_finishes_the_plan(prepared_lite: Path, tmp_path: Path):
    """`ablate --set` changes the plan's base; `--resume` with the same --set continues the plan
    (nothing left to run here), with another --set it is refused before any run."""
    plan, out = _plan_file(tmp_path, prepared_lite), tmp_path / "exp"
    proc = _cli("ablate", str(plan), "--out", str(out), "--set", "train.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "experiment.json").read_text())["spec"]["base"]["train"]["epochs"] == 1
    assert set(pl.from_arrow(ExperimentStore.open(out).epochs())["epoch"]) == {1}
    trials = ExperimentStore.open(out).trials()

    proc = _cli("ablate", str(plan), "--out", str(out), "--resume", "--set", "train.epochs=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ExperimentStore.open(out).trials().equals(trials), "nothing rerun"
    proc = _cli("ablate", str(plan), "--out", str(out), "--resume", "--set", "train.epochs=2", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "already holds ablation 'setme' with a different spec (differs in ['base'])" in proc.stderr


def test_ablate_resume_on_a_folder_without_a_plan(capsys, tmp_path: Path):
    plan = _plan_file(tmp_path, tmp_path / "absent-data")
    code, _, err = _run(capsys, "ablate", str(plan), "--out", str(tmp_path), "--resume")
    assert code == 2 and err.count("\n") == 1
    assert err == f"tacfn: error: --resume: {tmp_path} holds no ablation to continue (no experiment.json); drop --resume to start one\n"


def test_prepare_jobs_and_its_old_name(capsys, tmp_path: Path):
    """`data prepare --jobs N` counts decoding processes; the old `--workers N` still works, with a note."""
    from tacfn.data.synth import write_synthetic_ravdess

    raw = write_synthetic_ravdess(tmp_path / "raw", actors=1, clips_per_actor=2, seed=0, workers=1)
    code, out, err = _run(capsys, "data", "prepare", str(raw), str(tmp_path / "a"), "--jobs", "1")
    assert code == 0 and "prepared 2 clips" in out and "note" not in err
    code, out, err = _run(capsys, "data", "prepare", str(raw), str(tmp_path / "b"), "--workers", "1")
    assert code == 0 and "prepared 2 clips" in out
    notes = [line for line in err.splitlines() if line.startswith("tacfn:")]  # beside the progress bar
    assert notes == ["tacfn: note: data prepare --workers N is now --jobs N (decoding processes)"]
    code, _, err = _run(capsys, "data", "prepare", str(raw), str(tmp_path / "c"), "--jobs", "1", "--workers", "1")
    assert code == 2 and err == "tacfn: error: --workers is the old name of --jobs; give only --jobs\n"


def _raising(exc: BaseException):
    def command(_: object) -> int:
        raise exc

    return command


@pytest.mark.parametrize(
    "exc",
    [ConfigError("bad option"), DataError("bad data"), PermissionError(errno.EACCES, "Permission denied", "/x")],
)
def test_user_errors_are_one_line_and_exit_2(capsys, monkeypatch, exc):
    monkeypatch.delenv("TACFN_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_cmd_model_list", _raising(exc))
    code, _, err = _run(capsys, "model", "list")
    assert code == 2 and err == f"tacfn: error: {exc}\n"


@pytest.mark.parametrize("exc", [ValueError("an internal invariant"), KeyError("x"), OSError("no errno: not the user's")])
def test_an_internal_error_is_a_bug_with_its_traceback(capsys, monkeypatch, exc):
    monkeypatch.delenv("TACFN_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_cmd_model_list", _raising(exc))
    code, _, err = _run(capsys, "model", "list")
    assert code == 1
    assert err.startswith("Traceback (most recent call last):") and f"{type(exc).__name__}: " in err
    assert err.splitlines()[-1].startswith("tacfn: error: this is a bug in tacfn, not in what you passed; please report it")


def test_tacfn_debug_lets_errors_propagate(monkeypatch):
    monkeypatch.setenv("TACFN_DEBUG", "1")
    monkeypatch.setattr(cli, "_cmd_model_list", _raising(ConfigError("bad option")))
    with pytest.raises(ConfigError, match="bad option"):
        main(["model", "list"])


def test_help_states_the_grammar(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for words in ("--resume         a flag", "--set KEY=VALUE", "--jobs N, -j N", "exit status:", "130  interrupted"):
        assert words in out
