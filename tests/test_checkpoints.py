"""Loading MSAF-format unimodal checkpoints, and the weights fingerprint of frozen encoders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import tacfn
from tacfn.errors import ConfigError
from tacfn.model.checkpoints import load_msaf_checkpoint, weights_hash
from tacfn.model.encoders import MfccCnn, ResNeXt3D


def thin_resnext(base_width: int = 8) -> ResNeXt3D:
    return ResNeXt3D(layers=(1, 2, 1, 1), cardinality=4, base_width=base_width, stem_width=8)


def randomised(encoder: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and BatchNorm statistic a distinct random value, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, tensor in encoder.state_dict().items():
            if key.endswith("num_batches_tracked"):
                tensor.fill_(seed + 7)
            else:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
    return encoder


def msaf_state_dict(encoder: nn.Module, classifier: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The encoder's weights laid out as an MSAF unimodal checkpoint, classifier included."""
    state = {prefix + key: value.clone() for key, value in encoder.state_dict().items()}
    state[f"{prefix}{classifier}.weight"] = torch.randn(8, 16)
    state[f"{prefix}{classifier}.bias"] = torch.randn(8)
    return state


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "wrapped"])
@pytest.mark.parametrize("prefix", ["", "module."], ids=["bare", "data_parallel"])
def test_resnext_checkpoint_round_trip(tmp_path: Path, wrapped: bool, prefix: str) -> None:
    source = randomised(thin_resnext())
    state = msaf_state_dict(source, "fc", prefix)
    path = tmp_path / "fold_1_resnext50_best.pth"
    torch.save({"state_dict": state, "epoch": 12} if wrapped else state, path)

    target = thin_resnext()
    report = load_msaf_checkpoint(target, path)

    assert report.ignored == ("fc.weight", "fc.bias")
    assert set(report.loaded) == set(target.state_dict())
    assert report.path == str(path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_mfcc_checkpoint_round_trip_drops_fc1(tmp_path: Path) -> None:
    source = randomised(MfccCnn())
    path = tmp_path / "fold_1_mfccNet_best.pth"
    torch.save(msaf_state_dict(source, "fc1"), path)

    target = MfccCnn()
    report = load_msaf_checkpoint(target, path)

    assert report.ignored == ("fc1.weight", "fc1.bias")
    source.eval(), target.eval()
    x = torch.randn(2, 13, 212)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_checkpoint_without_batchnorm_counters_loads(tmp_path: Path) -> None:
    """Checkpoints from PyTorch < 0.4.1 lack ``num_batches_tracked``; BatchNorm fills it in."""
    source = randomised(MfccCnn())
    state = {k: v for k, v in msaf_state_dict(source, "fc1").items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)

    target = MfccCnn()
    report = load_msaf_checkpoint(target, path)

    assert not any(k.endswith("num_batches_tracked") for k in report.loaded)
    assert torch.equal(target.bn2.running_var, source.bn2.running_var)


def test_missing_trunk_key_is_named(tmp_path: Path) -> None:
    state = msaf_state_dict(thin_resnext(), "fc")
    del state["layer2.1.conv2.weight"]
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(ConfigError, match=r"lacks key 'layer2\.1\.conv2\.weight'"):
        load_msaf_checkpoint(thin_resnext(), tmp_path / "ckpt.pth")


def test_unexpected_key_is_named(tmp_path: Path) -> None:
    state = msaf_state_dict(thin_resnext(), "fc")
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "ckpt.pth")
    with pytest.raises(ConfigError, match=r"key 'layer5\.0\.conv1\.weight' that ResNeXt3D does not have"):
        load_msaf_checkpoint(thin_resnext(), tmp_path / "ckpt.pth")


def test_shape_mismatch_names_both_shapes_and_leaves_encoder_untouched(tmp_path: Path) -> None:
    torch.save(msaf_state_dict(thin_resnext(base_width=16), "fc"), tmp_path / "wide.pth")
    target = thin_resnext(base_width=8)
    before = weights_hash(target)
    match = r"'layer1\.0\.conv1\.weight' of shape \(16, 8, 1, 1, 1\), but ResNeXt3D expects \(8, 8, 1, 1, 1\)"
    with pytest.raises(ConfigError, match=match):
        load_msaf_checkpoint(target, tmp_path / "wide.pth")
    assert weights_hash(target) == before


def test_checkpoint_of_the_other_encoder_is_rejected(tmp_path: Path) -> None:
    torch.save(msaf_state_dict(MfccCnn(), "fc1"), tmp_path / "audio.pth")
    with pytest.raises(ConfigError, match="lacks key"):
        load_msaf_checkpoint(thin_resnext(), tmp_path / "audio.pth")


class _Pickled:
    """An arbitrary object: a weights-only load must refuse to unpickle it."""


def _truncated(path: Path) -> None:
    torch.save(MfccCnn().state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda path: path.write_bytes(b""), "not a PyTorch weights file"),
        (lambda path: path.write_text("this is not a checkpoint\n" * 4), "not a PyTorch weights file"),
        (_truncated, "not a PyTorch weights file, truncated"),
        (lambda path: torch.save({"state_dict": {}, "meta": _Pickled()}, path), "objects other than tensors"),
        (lambda path: torch.save([torch.zeros(2)], path), "must be a state_dict"),
        (lambda path: torch.save({"conv1.weight": torch.zeros(2), "epoch": 3}, path), "must be a state_dict"),
        (lambda path: None, "does not exist or is not a file"),
        (lambda path: path.mkdir(), "does not exist or is not a file"),
    ],
    ids=["empty", "text", "truncated", "pickled_object", "list", "non_tensor_value", "missing", "directory"],
)
def test_unreadable_checkpoint_raises_config_error(tmp_path: Path, make, match: str) -> None:
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(ConfigError, match=match) as excinfo:
        load_msaf_checkpoint(MfccCnn(), path)
    assert str(path) in str(excinfo.value) and "\n" not in str(excinfo.value)


def test_weights_hash_follows_the_weights() -> None:
    a = randomised(thin_resnext(), seed=1)
    b = thin_resnext()
    b.load_state_dict(a.state_dict())
    assert weights_hash(a) == weights_hash(b)
    assert len(weights_hash(a)) == 16 and int(weights_hash(a), 16) >= 0

    with torch.no_grad():
        b.layer3[0].conv2.weight[0, 0, 1, 1, 1] += 1e-3
    assert weights_hash(b) != weights_hash(a)

    c = thin_resnext()
    c.load_state_dict(a.state_dict())
    c.layer1[0].bn2.running_mean[3] += 1.0  # statistics change what a frozen encoder computes
    assert weights_hash(c) != weights_hash(a)


def test_weights_hash_is_stable_across_processes(tmp_path: Path) -> None:
    encoder = randomised(MfccCnn(), seed=3)
    torch.save(encoder.state_dict(), tmp_path / "w.pth")
    script = (
        "import sys, torch\n"
        "from tacfn.model.checkpoints import weights_hash\n"
        "from tacfn.model.encoders import MfccCnn\n"
        "m = MfccCnn()\n"
        "m.load_state_dict(torch.load(sys.argv[1], weights_only=True))\n"
        "print(weights_hash(m))\n"
    )
    package_root = str(Path(tacfn.__file__).resolve().parents[1])  # the same tacfn as this process
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": package_root}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "w.pth")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert result.stdout.strip() == weights_hash(encoder)
