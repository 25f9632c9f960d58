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


def test_fusion_options_take_what_searches_and_yaml_give():
    """Ints where a float goes (a YAML ``0``, Optuna's ``suggest_int``) and every valid choice."""
    fusion = {"name": "tacfn", "d": 32, "heads": 4, "attn_dropout": 0, "residual": False, "selection": "mean", "direction": "both"}
    cfg = parse_run_config({"model": {"fusion": fusion}, "data": {"protocol": "paper5", "fold": 4}})
    assert cfg.model.fusion == {**fusion, "attn_dropout": 0.0}
    arch = cfg.architecture()
    assert (arch.fusion.d, arch.fusion.heads, arch.fusion.residual, arch.fusion.attn_dropout) == (32, 4, False, 0.0)
    assert parse_run_config({"model": {"modalities": ["audio"], "fusion": {"name": "concat"}}}).architecture().fusion.name == "concat"


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
        # fusion options have exactly their field's type, and no other key is one
        ({"model": {"fusion": {"d": 64.5}}}, r"model\.fusion\.d: Input should be a valid integer, got 64\.5$"),
        ({"model": {"fusion": {"d": "64"}}}, r"model\.fusion\.d: Input should be a valid integer, got '64'$"),
        ({"model": {"fusion": {"heads": 4.0}}}, r"model\.fusion\.heads: Input should be a valid integer, got 4\.0$"),
        ({"model": {"fusion": {"residual": "false"}}}, r"model\.fusion\.residual: Input should be a valid boolean, got 'false'$"),
        ({"model": {"fusion": {"layers": True}}}, r"model\.fusion\.layers: Input should be a valid integer, got True$"),
        ({"model": {"fusion": {"selection": "max"}}}, r"model\.fusion\.selection: Input should be 'transformer', 'mean' or 'none'"),
        ({"model": {"fusion": {"head": 4}}}, r"model\.fusion\.head: unknown key$"),
        # a fold the protocol does not have
        ({"data": {"fold": 9}}, r"data\.fold: protocol '6fold' has 6 folds \(0\.\.5\), but got fold=9$"),
        ({"data": {"protocol": "paper5", "fold": 5}}, r"data\.fold: protocol 'paper5' has 5 folds \(0\.\.4\), but got fold=5$"),
        ({"train": {"seed": -1}}, r"train\.seed: Input should be greater than or equal to 0$"),
        ({"data": {"synthetic": {"seed": -1}}}, r"data\.synthetic\.seed: Input should be greater than or equal to 0$"),
        # the tacfn block fuses pairs: one modality has none, whatever the direction
        ({"model": {"modalities": ["audio"]}},
         r"model: invalid fusion direction 'audio->video': the tacfn block needs at least two modalities .* use model\.fusion\.name: concat"),
        ({"model": {"modalities": ["video"], "fusion": {"direction": "both"}}},
         r"model: invalid fusion direction 'both': the tacfn block needs at least two modalities .* got \['video'\]"),
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
