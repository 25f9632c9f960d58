"""The assembled TACFN model: presets, overrides, modality dropout, frozen backbones."""

from __future__ import annotations

import pytest
import torch

from tacfn.model import ModalityDropout, configure, create_model, drop_modalities, list_presets
from tacfn.model.summary import summarize


def _lite_inputs(batch: int = 3) -> dict[str, torch.Tensor]:
    cfg = configure("lite")
    return {m.name: torch.randn(batch, *m.input_shape) for m in cfg.modalities}


def test_presets_listed():
    assert list_presets() == ["iemocap", "lite", "paper"]


def test_lite_forward_shapes():
    model = create_model("lite").eval()
    feats = model.forward_features(_lite_inputs())
    assert feats["video"].shape == (3, *model.feature_spec["video"].shape)
    assert feats["audio"].shape == (3, 64, 12)
    assert model(_lite_inputs()).shape == (3, 8)


def test_iemocap_forward_shapes():
    model = create_model("iemocap", input_lengths={"text": 20, "audio": 40, "vision": 50}).eval()
    inputs = {"text": torch.randn(2, 20, 300), "audio": torch.randn(2, 40, 74), "vision": torch.randn(2, 50, 35)}
    assert model(inputs).shape == (2, 4, 2)


def test_paper_preset_shapes_per_stage():
    model = create_model("paper")
    summary = summarize(model, batch_size=2)
    shapes = {s.name: s.output_shape for s in summary.stages}
    assert shapes["video.layer4"] == (2, 2048, 2, 7, 7)
    assert shapes["audio.bn3"] == (2, 64, 26)
    assert shapes["fusion"] == (2, 8)
    # The paper reports 26.30M parameters for the full model.
    assert summary.total_parameters == pytest.approx(26.30e6, rel=0.02)


def test_lite_logits_do_not_depend_on_batch_mates():
    torch.manual_seed(0)
    model = create_model("lite").eval()
    inputs = _lite_inputs(4)
    together = model(inputs)
    alone = torch.cat([model({k: v[i : i + 1] for k, v in inputs.items()}) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_modality_dropout_zeroes_whole_modality_per_sample():
    torch.manual_seed(0)
    dropout = ModalityDropout({"audio": 0.5})
    feats = {"audio": torch.randn(2000, 4, 5) + 3.0, "video": torch.randn(2000, 2, 1, 2, 2) + 3.0}
    out = dropout(feats)
    zeroed = (out["audio"] == 0).flatten(1).all(1)
    kept = (out["audio"] == feats["audio"]).flatten(1).all(1)
    assert bool((zeroed | kept).all()), "a sample's audio is either wholly zeroed or untouched"
    assert 0.45 < zeroed.float().mean().item() < 0.55
    assert torch.equal(out["video"], feats["video"])
    dropout.eval()
    assert torch.equal(dropout(feats)["audio"], feats["audio"])


def test_modality_dropout_rejects_bad_rate_and_unknown_modality():
    with pytest.raises(ValueError, match="modality_dropout"):
        ModalityDropout({"audio": 1.0})
    with pytest.raises(ValueError, match="unknown modality"):
        configure("lite", modality_dropout={"text": 0.1})


def test_missing_modality_zeroes_it_and_changes_logits():
    torch.manual_seed(0)
    model = create_model("lite").eval()
    inputs = _lite_inputs(2)
    feats = model.forward_features(inputs)
    dropped = drop_modalities(feats, ["audio"])
    assert torch.count_nonzero(dropped["audio"]) == 0
    assert torch.equal(dropped["video"], feats["video"])
    assert not torch.allclose(model(inputs), model(inputs, missing=("audio",)))
    with pytest.raises(ValueError, match="unknown modality"):
        model(inputs, missing=("text",))


def test_frozen_backbone_freezes_encoders_only():
    model = create_model("lite", backbone="frozen")
    assert not any(p.requires_grad for p in model.encoders.parameters())
    assert all(p.requires_grad for p in model.fusion.parameters())
    model.train()
    assert not model.encoders.training and model.fusion.training
    total, trainable = model.num_parameters()
    assert trainable == sum(p.numel() for p in model.fusion.parameters()) < total


def test_unimodal_model_with_concat():
    model = create_model("lite", modalities=["audio"], fusion="concat").eval()
    assert model.modalities == ("audio",)
    assert model({"audio": torch.randn(2, 13, 106)}).shape == (2, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "nope"}, r"unknown fusion block 'nope'; valid: \['concat'"),
        ({"fusion": {"heads": 5}}, r"`heads` must divide `d`.*valid heads"),
        ({"fusion": {"colour": 1}}, r"unknown fusion option"),
        ({"modalities": ["smell"]}, r"unknown modality"),
        ({"modalities": []}, r"modalities must name at least one of \['video', 'audio'\], each once, but got \[\]"),
        ({"modalities": ["audio", "audio"]}, r"each once, but got \['audio', 'audio'\]"),
        ({"backbone": "melted"}, r"unknown backbone mode"),
        ({"modalities": ["audio"]}, r"invalid fusion direction"),
    ],
)
def test_bad_model_options_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("lite", **kwargs)


def test_unknown_preset_lists_valid():
    with pytest.raises(ValueError, match=r"unknown preset 'huge'; valid: \['iemocap', 'lite', 'paper'\]"):
        create_model("huge")
