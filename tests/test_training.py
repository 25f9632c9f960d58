"""One training run on real prepared data: learning, selection, determinism, checkpoints."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tacfn.cli import main
from tacfn.config import parse_run_config
from tacfn.data.prepare import prepare_ravdess
from tacfn.data.preprocessing import LITE_PREPROCESS
from tacfn.data.synth import write_synthetic_ravdess
from tacfn.errors import ConfigError
from tacfn.model import TACFN
from tacfn.tasks import load_task
from tacfn.training import RunResult, RunState, Trainer, conclude, run_epochs, train


@pytest.fixture(scope="module")
def learning_data(tmp_path_factory) -> Path:
    """Enough synthetic clips for the lite model to learn the planted emotions."""
    root = tmp_path_factory.mktemp("learn")
    write_synthetic_ravdess(root / "raw", actors=6, clips_per_actor=48, seed=1)
    prepare_ravdess(root / "raw", root / "prepared", LITE_PREPROCESS)
    return root / "prepared"


def _cfg_map(prepared: Path, tmp: Path, **sections) -> dict:
    base = {
        "model": {"preset": "lite"},
        "data": {"path": str(prepared), "cache_dir": str(tmp / "cache")},
        "train": {"epochs": 2, "batch_size": 16, "seed": 0},
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def _cfg(prepared: Path, tmp: Path, **sections):
    return parse_run_config(_cfg_map(prepared, tmp, **sections))


def _error_line(capsys) -> str:
    """The CLI's stderr, which must be one ``tacfn: error:`` line."""
    err = capsys.readouterr().err
    assert err.startswith("tacfn: error: ") and err.count("\n") == 1, err
    return err


def test_splits_are_speaker_independent(prepared_lite: Path, tmp_path: Path):
    task = load_task(_cfg(prepared_lite, tmp_path))
    actor = lambda ids: {int(i.split("-")[-1]) for i in ids}  # noqa: E731
    train_a, val_a, test_a = actor(task.train.ids), actor(task.val.ids), actor(task.test.ids)
    assert train_a and val_a and test_a
    assert not (train_a & val_a) and not (train_a & test_a) and not (val_a & test_a)


def test_same_seed_same_metrics(prepared_lite: Path, tmp_path: Path):
    cfg = _cfg(prepared_lite, tmp_path)
    a, b = train(cfg), train(cfg)
    assert [r.train_loss for r in a.history] == [r.train_loss for r in b.history]
    assert a.test == b.test and a.predictions == b.predictions
    c = train(_cfg(prepared_lite, tmp_path, train={"seed": 1}))
    assert [r.train_loss for r in c.history] != [r.train_loss for r in a.history]


def test_best_epoch_is_chosen_on_validation(prepared_lite: Path, tmp_path: Path):
    result = train(_cfg(prepared_lite, tmp_path, train={"epochs": 3}))
    scores = [r.val_score for r in result.history]
    assert result.best_epoch == 1 + int(np.argmax(scores))
    assert result.val["score"] == pytest.approx(max(scores))
    assert set(result.test_missing_modality) == {"video", "audio"}
    assert len(result.predictions["pred"]) == len(result.predictions["label"]) > 0


def test_non_finite_loss_stops_run_as_diverged(prepared_lite: Path, tmp_path: Path):
    cfg = _cfg(prepared_lite, tmp_path, train={"optimizer": "sgd", "lr": 1e30, "epochs": 3})
    result = train(cfg, out_dir=tmp_path / "run")
    assert result.status == "diverged"
    assert "non-finite loss" in result.error
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "diverged"


def test_non_finite_weights_after_an_epoch_end_the_run_as_diverged(prepared_lite: Path, tmp_path: Path):
    """Epoch 2's last step leaves non-finite weights behind a finite training loss: its
    validation loss is NaN, the run diverged there, and epoch 1 stays the best."""
    cfg = _cfg(prepared_lite, tmp_path, train={"epochs": 3})
    trainer = Trainer(cfg, load_task(cfg))
    train_epoch = trainer.train_epoch

    def poisoned(epoch: int) -> tuple[float, float]:
        losses = train_epoch(epoch)
        if epoch == 2:
            with torch.no_grad():
                for param in trainer.model.trainable_parameters():
                    param.fill_(float("nan"))
        return losses

    trainer.train_epoch = poisoned
    state = RunState()
    assert [record.epoch for record in run_epochs(trainer, state)] == [1]
    assert state.status == "diverged" and "non-finite validation loss (nan) after epoch 2" in state.error
    result = conclude(trainer, state)
    assert result.status == "diverged" and result.best_epoch == 1
    assert np.isfinite(result.val["score"]) and result.val["score"] == pytest.approx(state.history[0].val_score)


def test_resume_continues_exactly_like_an_uninterrupted_run(prepared_lite: Path, tmp_path: Path):
    straight = train(_cfg(prepared_lite, tmp_path, train={"epochs": 3}))
    out = tmp_path / "run"
    train(_cfg(prepared_lite, tmp_path, train={"epochs": 2}), out_dir=out)
    resumed = train(_cfg(prepared_lite, tmp_path, train={"epochs": 3}), out_dir=out, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]
    assert [r.train_loss for r in resumed.history] == pytest.approx([r.train_loss for r in straight.history], rel=1e-5)
    assert resumed.test["score"] == pytest.approx(straight.test["score"])
    state = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert state["epoch"] == resumed.best_epoch


def test_resume_refuses_a_changed_config(prepared_lite: Path, tmp_path: Path, capsys):
    """The checkpoint's optimizer state would keep the old lr: a run folder records its
    config, and only train.epochs may change on resume."""
    out = tmp_path / "run"
    train(_cfg(prepared_lite, tmp_path, train={"epochs": 1}), out_dir=out)
    checkpoint = (out / "checkpoints" / "last.pt").read_bytes()
    changed = _cfg(prepared_lite, tmp_path, data={"fold": 1}, train={"epochs": 2, "lr": 0.01})
    with pytest.raises(ConfigError, match=r"--resume: .*run trained with another config \(differs in data\.fold, train\.lr\)"):
        train(changed, out_dir=out, resume=True)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_cfg_map(prepared_lite, tmp_path, train={"epochs": 2})))
    assert main(["train", str(config), "--out", str(out), "--resume", "--set", "train.weight_decay=0.1"]) == 2
    assert "differs in train.weight_decay)" in _error_line(capsys)
    assert (out / "checkpoints" / "last.pt").read_bytes() == checkpoint

    resumed = train(_cfg(prepared_lite, tmp_path, train={"epochs": 2}), out_dir=out, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2]
    (out / "config.json").unlink()  # a folder from before runs recorded their config resumes as before
    resumed = train(_cfg(prepared_lite, tmp_path, train={"epochs": 3, "lr": 0.01}), out_dir=out, resume=True)
    assert [r.epoch for r in resumed.history] == [1, 2, 3]

    config.write_text(yaml.safe_dump(_cfg_map(prepared_lite, tmp_path, train={"epochs": 2, "lr": 0.01})))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["train", str(config), "--out", str(out), "--resume"]) == 2  # fewer epochs than it ran
    assert "already ran 3 epochs; resume it with train.epochs >= 3, not 2" in _error_line(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_cuda_without_cuda_is_one_config_error_line(prepared_lite: Path, tmp_path: Path, monkeypatch, capsys):
    """Parsing accepts train.device: cuda (a search's driver may have no GPU while its trials
    do); the run on this machine refuses it, naming the key, before loading any data."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("tacfn.training.load_task", lambda *a, **k: pytest.fail("loaded data"))
    cfg = _cfg(prepared_lite, tmp_path, train={"device": "cuda"})
    with pytest.raises(ConfigError, match=r"^train\.device: 'cuda', but this machine has no CUDA device"):
        train(cfg)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_cfg_map(prepared_lite, tmp_path)))
    assert main(["train", str(config), "--set", "train.device=cuda"]) == 2
    assert "train.device: 'cuda'" in _error_line(capsys)


def test_a_model_too_large_for_memory_is_one_config_error(prepared_lite: Path, tmp_path: Path, monkeypatch):
    """An absurd model.fusion.d passes the config's rules but not the allocator: the run says
    the model's size and what to change, not the allocator's traceback."""

    def refuse(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to allocate 12000000000000 bytes")

    monkeypatch.setattr(TACFN, "to", refuse)
    with pytest.raises(ConfigError, match=r"^model: 243,321 parameters \(0\.0 GiB\) do not fit in the memory of cpu; make model\.fusion\.d"):
        train(_cfg(prepared_lite, tmp_path), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_frozen_backbone_trains_head_only_and_caches_features(prepared_lite: Path, tmp_path: Path):
    cfg = _cfg(prepared_lite, tmp_path, model={"backbone": "frozen"})
    result = train(cfg)
    assert result.status == "completed"
    assert result.trainable_parameters < result.num_parameters
    cache_files = list((tmp_path / "cache" / "features").glob("*.arrow"))
    assert len(cache_files) == 1
    before = cache_files[0].stat().st_mtime_ns
    again = train(cfg)
    assert cache_files[0].stat().st_mtime_ns == before, "second run reuses the cached features"
    assert again.test == result.test


def test_test_latency_times_the_forward_passes_of_one_test_pass(prepared_lite: Path, tmp_path: Path):
    """test_ms_per_sample is the wall time of the model's forward passes over the test split
    (all modalities present), once, per test sample, in ms: a forward pass made 0.2 s slower
    adds 200 ms per test batch, and the validation and missing-modality passes add nothing.
    A real run records it in result.json; a result.json from before it reads as None."""
    cfg = _cfg(prepared_lite, tmp_path, model={"backbone": "frozen"}, train={"epochs": 1})
    trainer = Trainer(cfg, load_task(cfg))
    state = RunState()
    list(run_epochs(trainer, state))
    logits, delay = trainer._logits, 0.2

    def slow(*args, **kwargs):
        time.sleep(delay)
        return logits(*args, **kwargs)

    trainer._logits = slow
    result = conclude(trainer, state)
    test = trainer.task.test
    batches = -(-len(test) // max(cfg.train.batch_size, 64))
    slept = 1e3 * delay * batches / len(test)  # ms per sample that the delay alone adds to one test pass
    assert set(result.test_missing_modality) == {"video", "audio"}  # two more test passes, not timed
    assert slept <= result.test_ms_per_sample < 1.5 * slept

    out = tmp_path / "run"
    train(cfg, out_dir=out)
    recorded = json.loads((out / "result.json").read_text())
    assert recorded["test_ms_per_sample"] > 0 and math.isfinite(recorded["test_ms_per_sample"])
    del recorded["test_ms_per_sample"]
    assert RunResult.from_json(recorded).test_ms_per_sample is None


def test_iemocap_run_reports_per_emotion_metrics(tmp_path: Path):
    cfg = parse_run_config(
        {"model": {"preset": "iemocap"}, "data": {"cache_dir": str(tmp_path)}, "train": {"epochs": 2, "batch_size": 32}}
    )
    result = train(cfg)
    assert result.status == "completed"
    for emotion in ("neutral", "happy", "sad", "angry"):
        assert 0.0 <= result.test[f"{emotion}_accuracy"] <= 1.0
        assert f"{emotion}_weighted_f1" in result.test
    assert np.asarray(result.predictions["pred"]).shape == (len(result.predictions["id"]), 4)


@pytest.mark.slow
def test_lite_tacfn_learns_and_beats_each_single_modality(learning_data: Path, tmp_path: Path):
    train_cfg = {"epochs": 12, "batch_size": 16, "lr": 2e-3, "seed": 0}
    fused = train(_cfg(learning_data, tmp_path, train=train_cfg))
    audio = train(_cfg(learning_data, tmp_path, model={"modalities": ["audio"], "fusion": {"name": "concat"}}, train=train_cfg))
    video = train(_cfg(learning_data, tmp_path, model={"modalities": ["video"], "fusion": {"name": "concat"}}, train=train_cfg))
    chance = 1 / 8
    assert fused.test["score"] >= 3 * chance, fused.test["score"]
    assert fused.test["score"] > audio.test["score"] + 0.1
    assert fused.test["score"] > video.test["score"] + 0.1


def test_a_slow_epoch_shows_its_batches_and_a_fast_one_does_not(prepared_lite: Path, tmp_path: Path, capsys):
    """A paper-preset finetune step on a CPU takes minutes: `tacfn train` shows a bar over the
    epoch's batches once an epoch has run for 2 s, and nothing for a quick one."""
    import time
    from dataclasses import replace

    cfg = _cfg(prepared_lite, tmp_path, model={"backbone": "frozen"}, train={"batch_size": 4})
    fast = Trainer(cfg, load_task(cfg), progress=True)  # 8 steps on cached features: well under 2 s
    task = fast.task
    fast.train_epoch(1)
    assert "epoch 1" not in capsys.readouterr().err

    def slow_batch(positions):
        time.sleep(0.5)
        return task.train.batch(positions)

    slow = replace(task, train=replace(task.train, batch=slow_batch))
    Trainer(cfg, slow, progress=True).train_epoch(1)
    assert "epoch 1" in capsys.readouterr().err
    Trainer(cfg, slow, progress=False).train_epoch(1)
    assert "epoch 1" not in capsys.readouterr().err


def test_train_refuses_an_out_folder_that_holds_a_run(prepared_lite: Path, tmp_path: Path, capsys):
    """Without --resume, a second run into the same --out would rewrite config.json and
    last.pt and leave the first run's result.json and best.pt beside them: refused before
    anything is loaded or written. An empty folder is a fine --out; --resume continues."""
    out = tmp_path / "run"
    out.mkdir()
    train(_cfg(prepared_lite, tmp_path, train={"epochs": 1}), out_dir=out)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert {str(p) for p in files} == {"config.json", "result.json", "checkpoints/last.pt", "checkpoints/best.pt"}
    with pytest.raises(ConfigError, match=rf"^{out} already holds a training run .*; use --resume to continue it, or another --out$"):
        train(_cfg(prepared_lite, tmp_path, train={"epochs": 1, "lr": 0.01}), out_dir=out)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_cfg_map(prepared_lite, tmp_path, train={"epochs": 2})))
    assert main(["train", str(config), "--out", str(out)]) == 2
    assert f"{out} already holds a training run" in _error_line(capsys)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    for name in ("config.json", "result.json", "checkpoints"):  # any one of them marks a run (an interrupted one)
        partial = tmp_path / f"partial-{name}"
        (partial / "checkpoints").mkdir(parents=True) if name == "checkpoints" else partial.mkdir()
        if name != "checkpoints":
            (partial / name).write_text("{}")
        with pytest.raises(ConfigError, match=rf"already holds a training run \({name}\)"):
            train(_cfg(prepared_lite, tmp_path, train={"epochs": 1}), out_dir=partial)
        assert [p.name for p in partial.iterdir()] == [name]

    assert main(["train", str(config), "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "result.json").read_text())["epochs_run"] == 2


def test_result_json_writes_null_for_undefined_numbers(tmp_path: Path):
    """A class without test samples has no accuracy; bare NaN is not JSON, so result.json
    holds null there (and for any other non-finite number), and its readers take it."""
    from dashboards.run_report import write_run_report
    from tacfn.metrics import classification_metrics
    from tacfn.training import EpochRecord, write_result

    test = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 8)
    assert test["per_class_accuracy"] == [0.5, 1.0] + [None] * 6
    test["per_class_accuracy"][2] = float("nan")  # as before: whatever slips through is written as null
    record = EpochRecord(epoch=1, train_loss=float("inf"), train_score=0.5, val_loss=1.0, val_score=0.5, val_weighted_f1=0.5, seconds=1.0)
    result = RunResult(
        status="completed", error=None, best_epoch=1, epochs_run=1, val=test, test=test,
        test_missing_modality={"audio": 0.5, "video": 0.25}, history=[record],
        num_parameters=10, trainable_parameters=10, seconds=1.0,
    )
    path = write_result(result, tmp_path / "run")

    def no_constants(name: str) -> None:
        pytest.fail(f"result.json holds {name}, which is not JSON")

    written = json.loads(path.read_text(), parse_constant=no_constants)
    assert written["test"]["per_class_accuracy"] == [0.5, 1.0] + [None] * 6
    assert written["history"][0]["train_loss"] is None
    assert RunResult.from_json(written).test["per_class_accuracy"][2] is None
    assert write_run_report(tmp_path / "run").is_file()


@pytest.mark.parametrize(("text", "problem"), [("{bad", r"Expecting property name"), ("[1, 2]", r"a JSON list, not a mapping")])
def test_resume_with_a_damaged_config_json_names_the_file(prepared_lite: Path, tmp_path: Path, capsys, text: str, problem: str):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"")  # never read: the config is checked first
    (out / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=rf"^{out / 'config.json'}: not a run config \({problem}"):
        train(_cfg(prepared_lite, tmp_path), out_dir=out, resume=True)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_cfg_map(prepared_lite, tmp_path)))
    assert main(["train", str(config), "--out", str(out), "--resume"]) == 2
    assert f"tacfn: error: {out / 'config.json'}: not a run config (" in _error_line(capsys)
    assert (out / "config.json").read_text() == text
