"""Run configs: valid files load, bad ones fail with the file, key and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from tacfn.config import load_run_config, parse_run_config
from tacfn.errors import ConfigError


def test_defaults_are_the_lite_preset_with_paper_training():
    cfg = parse_run_config({})
    assert cfg.model.preset == "lite"
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size, cfg.train.epochs) == ("adam", 1e-3, 16, 70)
    assert cfg.architecture().fusion.name == "tacfn"


def test_fusion_overrides_apply_over_the_preset():
    cfg = parse_run_config({"model": {"preset": "lite", "fusion": {"heads": 2, "residual": False}}})
    arch = cfg.architecture()
    assert (arch.fusion.heads, arch.fusion.residual, arch.fusion.layers) == (2, False, 2)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"train": {"epochs": -1}}, r"train\.epochs: Input should be greater than or equal to 1"),
        ({"train": {"lr": 0}}, r"train\.lr: Input should be greater than 0"),
        ({"train": {"optimiser": "adam"}}, r"train\.optimiser: unknown key"),
        ({"trian": {}}, r"trian: unknown key"),
        ({"model": {"fusion": {"name": "transfusion"}}}, r"model: unknown fusion block 'transfusion'; valid:"),
        ({"model": {"fusion": {"heads": 3}}}, r"model: `heads` must divide `d`"),
        ({"model": {"preset": "giant"}}, r"model: unknown preset 'giant'"),
        ({"data": {"protocol": "10fold"}}, r"data\.protocol: Input should be '6fold' or 'paper5'"),
        ({"model": {"modality_dropout": {"audio": 1.5}}}, r"modality_dropout"),
        (["not", "a", "mapping"], r"expected a mapping"),
    ],
)
def test_bad_configs_give_one_clear_line(data, match):
    with pytest.raises(ConfigError, match=match) as info:
        parse_run_config(data, "run.yaml")
    message = str(info.value)
    assert message.startswith("run.yaml: ") and "\n" not in message


def test_malformed_yaml_names_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  preset: lite\n  fusion: {name: tacfn\ntrain:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: malformed YAML at line \d+"):
        load_run_config(path)


def test_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "absent.yaml")
