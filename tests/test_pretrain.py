"""Unimodal pretraining per fold (tacfn.pretrain): trained on the fold's training actors only,
cached per fold, loaded by frozen runs, and refused on another fold or dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tacfn.config import parse_run_config
from tacfn.data.prepared import PreparedDataset
from tacfn.data.splits import get_fold
from tacfn.errors import ConfigError
from tacfn.model.checkpoints import weights_hash
from tacfn.pretrain import PRETRAIN_RECORD, ensure_pretrained
from tacfn.tasks import load_task
from tacfn.training import Trainer, train


def _config(prepared: Path, cache: Path, fold: int = 0, **model) -> dict:
    return {
        "model": {"preset": "lite", "backbone": "frozen", "pretrain": {"epochs": 2}, **model},
        "data": {"path": str(prepared), "fold": fold, "cache_dir": str(cache)},
        "train": {"epochs": 1, "batch_size": 8},
    }


def test_pretraining_runs_once_per_fold_and_frozen_runs_load_it(prepared_lite: Path, tmp_path: Path) -> None:
    cfg = parse_run_config(_config(prepared_lite, tmp_path))
    task = load_task(cfg)
    paths = ensure_pretrained(cfg, task, tmp_path / "pretrained")
    assert sorted(paths) == ["audio", "video"]
    record = json.loads((paths["video"].parent / PRETRAIN_RECORD).read_text())["video"]
    assert (record["protocol"], record["fold"], record["content_digest"]) == ("6fold", 0, task.content_digest)
    stamps = {m: p.stat().st_mtime_ns for m, p in paths.items()}

    trainer = Trainer(cfg, task)  # reuses the cached encoders: nothing is trained again
    assert {m: p.stat().st_mtime_ns for m, p in paths.items()} == stamps
    video = torch.load(paths["video"], weights_only=True)
    assert weights_hash(trainer.model.encoders["video"]) == _hash_of({k: v for k, v in video.items() if not k.startswith("fc.")})
    assert "fc.weight" in video  # MSAF's format: the unimodal classifier rides along, and loading drops it

    other = ensure_pretrained(parse_run_config(_config(prepared_lite, tmp_path, fold=1)), load_task(parse_run_config(_config(prepared_lite, tmp_path, fold=1))), tmp_path / "pretrained")
    assert other["video"].parent != paths["video"].parent  # each fold pretrains on its own training actors


def _hash_of(state: dict) -> str:
    """weights_hash of a checkpoint's trunk, via a fresh encoder that loads it."""
    from tacfn.model.encoders import LiteVideoEncoder

    encoder = LiteVideoEncoder()
    encoder.load_state_dict(state)
    return weights_hash(encoder)


def test_pretraining_never_sees_validation_or_test_actors(prepared_lite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tacfn.pretrain as pretrain

    seen: list[tuple[str, ...]] = []
    real = pretrain.Trainer

    def spy(cfg, task, **kwargs):
        seen.append(task.train.ids + task.val.ids + task.test.ids)  # every split the pretraining can read
        return real(cfg, task, **kwargs)

    monkeypatch.setattr(pretrain, "Trainer", spy)
    cfg = parse_run_config(_config(prepared_lite, tmp_path))
    ensure_pretrained(cfg, load_task(cfg), tmp_path / "pretrained")
    dataset = PreparedDataset(prepared_lite)
    fold = get_fold(sorted(set(dataset.actors.tolist())), "6fold", 0)
    held_out = {dataset.clip_ids[i] for i in dataset.subset(fold.val_actors + fold.test_actors)}
    assert len(seen) == 2 and all(ids and not set(ids) & held_out for ids in seen)


def test_a_run_with_pretraining_is_reproducible_whether_or_not_the_cache_exists(prepared_lite: Path, tmp_path: Path) -> None:
    cfg = parse_run_config(_config(prepared_lite, tmp_path, fusion={"attended_pool": "separate"}))
    first = train(cfg)  # pretrains, then trains
    again = train(cfg)  # finds the cached encoders
    assert [r.train_loss for r in first.history] == [r.train_loss for r in again.history]
    assert first.test["score"] == again.test["score"]


def test_checkpoints_of_another_fold_are_refused(prepared_lite: Path, tmp_path: Path) -> None:
    fold1 = parse_run_config(_config(prepared_lite, tmp_path, fold=1))
    paths = ensure_pretrained(fold1, load_task(fold1), tmp_path / "pretrained")
    cfg = parse_run_config(_config(prepared_lite, tmp_path, pretrain=None, checkpoints={"video": str(paths["video"])}))
    with pytest.raises(ConfigError, match=r"model.checkpoints.video: .* pretrained on 6fold fold 1, but this run tests on 6fold fold 0"):
        Trainer(cfg, load_task(cfg))


def test_checkpoints_of_another_dataset_are_refused(prepared_lite: Path, tmp_path: Path) -> None:
    cfg = parse_run_config(_config(prepared_lite, tmp_path))
    paths = ensure_pretrained(cfg, load_task(cfg), tmp_path / "pretrained")
    record_path = paths["audio"].parent / PRETRAIN_RECORD
    record = json.loads(record_path.read_text())
    record["audio"]["content_digest"] = "0" * 64
    record_path.write_text(json.dumps(record))
    run = parse_run_config(_config(prepared_lite, tmp_path, pretrain=None, checkpoints={"audio": str(paths["audio"])}))
    with pytest.raises(ConfigError, match=r"model.checkpoints.audio: .* pretrained on another dataset"):
        Trainer(run, load_task(run))


@pytest.mark.parametrize(
    ("pretrain", "match"),
    [({"epochs": 0}, r"model.pretrain.epochs"), ({"lr": -1.0}, r"model.pretrain.lr"), ({"epoch": 3}, r"model.pretrain.epoch: unknown key")],
)
def test_bad_pretrain_settings_name_the_key(pretrain: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_run_config({"model": {"preset": "lite", "pretrain": pretrain}})


def test_a_synthetic_task_records_its_planted_effects_and_ceilings(prepared_lite: Path, tmp_path: Path) -> None:
    """What experiment.json keeps of the data, for the dashboard's ceilings."""
    task = load_task(parse_run_config(_config(prepared_lite, tmp_path)))
    record = task.dataset_record()
    assert record["planted_effects"] == ["audio", "video", "cross"]
    assert record["ceilings"] == {"audio only": 0.25, "video only": 0.25, "additive fusion": 0.5, "interaction": 1.0}


def test_tacfn_train_refuses_another_folds_checkpoint_in_one_line(prepared_lite: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    fold1 = parse_run_config(_config(prepared_lite, tmp_path, fold=1))
    paths = ensure_pretrained(fold1, load_task(fold1), tmp_path / "pretrained")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(_config(prepared_lite, tmp_path, pretrain=None, checkpoints={"audio": str(paths["audio"])})))
    before = {p: p.read_bytes() for p in paths["audio"].parent.iterdir()}
    proc = subprocess.run([sys.executable, "-m", "tacfn.cli", "train", str(config), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"tacfn: error: model.checkpoints.audio: {paths['audio']} was pretrained on 6fold fold 1, but this run tests on "
        "6fold fold 0: its test actors may have trained the encoder; pretrain on fold 0"
    ]
    assert {p: p.read_bytes() for p in paths["audio"].parent.iterdir()} == before
