"""Unimodal encoders: analytic output shapes, the paper's trunks, gradients, the stem ReLU switch."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tacfn.model.encoders import LiteVideoEncoder, MfccCnn, ResNeXt3D, SequenceProjection


def thin_resnext(**kwargs) -> ResNeXt3D:
    """A ResNeXt3D with the paper's structure at a fraction of its width (fast on a CPU)."""
    return ResNeXt3D(**{"layers": (1, 2, 1, 1), "cardinality": 4, "base_width": 8, "stem_width": 8, **kwargs})


ENCODERS = {
    "resnext_thin": (thin_resnext, (3, 8, 32, 32)),
    "resnext_thin_odd": (thin_resnext, (3, 5, 45, 37)),
    "resnext_two_stages": (
        lambda: ResNeXt3D(layers=(1, 1), cardinality=2, base_width=4, stem_width=4),
        (3, 6, 20, 28),
    ),
    "lite": (LiteVideoEncoder, (3, 8, 64, 64)),
    "lite_narrow_odd": (lambda: LiteVideoEncoder(width=16), (3, 11, 50, 70)),
    "mfcc_paper": (MfccCnn, (13, 212)),
    "mfcc_lite": (MfccCnn, (13, 106)),
    "mfcc_wide": (lambda: MfccCnn(n_mfcc=20, widths=(8, 16, 24)), (20, 80)),
    "seq_text": (lambda: SequenceProjection(300, 30), (20, 300)),
    "seq_audio_k3": (lambda: SequenceProjection(74, 16, kernel_size=3), (40, 74)),
}


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_output_shape_matches_forward(name: str) -> None:
    factory, input_shape = ENCODERS[name]
    encoder = factory().eval()
    with torch.no_grad():
        out = encoder(torch.randn(2, *input_shape))
    assert tuple(out.shape) == (2, *encoder.output_shape(input_shape))


@pytest.mark.parametrize("name", ["resnext_thin", "lite", "mfcc_paper", "seq_audio_k3"])
def test_gradients_reach_every_parameter(name: str) -> None:
    factory, input_shape = ENCODERS[name]
    torch.manual_seed(0)
    encoder = factory().train()
    out = encoder(torch.randn(3, *input_shape))
    # A random projection, not a plain sum: a sum over a BatchNorm output has zero gradient.
    (out * torch.randn_like(out)).sum().backward()
    for param_name, param in encoder.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_paper_video_trunk_shape_and_parameter_count() -> None:
    encoder = ResNeXt3D().eval()
    with torch.no_grad():
        out = encoder(torch.randn(1, 3, 30, 224, 224))
    assert tuple(out.shape) == (1, 2048, 2, 7, 7)
    assert encoder.output_shape((3, 30, 224, 224)) == (2048, 2, 7, 7)

    # Count DESIGN.md's architecture by hand: bias-free convs, BN (2 params) after each.
    def bottleneck(c_in: int, width: int, shortcut: bool) -> int:
        convs = c_in * width + width * (width // 32) * 27 + width * 2 * width
        bns = 2 * (width + width + 2 * width)
        return convs + bns + (c_in * 2 * width + 2 * 2 * width if shortcut else 0)

    expected, c_in = 3 * 64 * 7**3 + 2 * 64, 64
    for depth, width in zip((3, 4, 6, 3), (128, 256, 512, 1024)):
        expected += bottleneck(c_in, width, True) + (depth - 1) * bottleneck(2 * width, width, False)
        c_in = 2 * width
    params = sum(p.numel() for p in encoder.parameters())
    assert params == expected
    assert params < 26_300_000  # the paper's 26.30M is the whole model, trunk included


def test_resnext_module_names_follow_msaf_layout() -> None:
    encoder = ResNeXt3D()
    keys = set(encoder.state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias"} <= keys
    assert {"layer4.2.conv3.weight", "layer4.2.bn3.weight", "layer2.3.conv2.weight"} <= keys
    assert not any(k.startswith("layer2.1.downsample") for k in keys)  # shortcut conv on first blocks only
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv3d)]
    assert all(conv.bias is None for conv in convs)
    assert {conv.groups for conv in convs if conv.kernel_size == (3, 3, 3)} == {32}


def test_stem_relu_switch_changes_only_the_computation() -> None:
    torch.manual_seed(0)
    with_relu = thin_resnext(stem_relu=True).eval()
    without_relu = thin_resnext(stem_relu=False).eval()
    with torch.no_grad():  # a negative BN shift makes whole pooling windows negative: there the ReLU matters
        with_relu.bn1.bias.fill_(-2.0)
    without_relu.load_state_dict(with_relu.state_dict())  # same keys, so MSAF checkpoints fit both
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        stem = with_relu.bn1(with_relu.conv1(x))
        stems = {True: stem.relu(), False: stem}
        for relu, model in ((True, with_relu), (False, without_relu)):
            h = model.maxpool(stems[relu])
            for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
                h = stage(h)
            torch.testing.assert_close(model(x), h)
        assert not torch.allclose(with_relu(x), without_relu(x))


def test_convs_use_kaiming_fan_out_init() -> None:
    torch.manual_seed(0)
    for encoder in (thin_resnext(stem_width=32), LiteVideoEncoder()):
        conv = next(m for m in encoder.modules() if isinstance(m, nn.Conv3d) and m.weight.numel() > 20_000)
        fan_out = conv.out_channels * math.prod(conv.kernel_size) // conv.groups
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)


def test_paper_and_lite_audio_shapes() -> None:
    encoder = MfccCnn().eval()
    with torch.no_grad():
        assert tuple(encoder(torch.randn(4, 13, 212)).shape) == (4, 64, 26)
        assert tuple(encoder(torch.randn(4, 13, 106)).shape) == (4, 64, 12)
    assert {"conv1.weight", "conv3.bias", "bn2.running_mean", "bn3.weight"} <= set(encoder.state_dict())


def test_mfcc_dropout_is_active_only_in_training() -> None:
    encoder = MfccCnn(dropout=0.5)
    x = torch.randn(4, 13, 106)
    encoder.eval()
    torch.testing.assert_close(encoder(x), encoder(x))
    encoder.train()
    assert not torch.allclose(encoder(x), encoder(x))


def test_lite_video_shape_and_size() -> None:
    encoder = LiteVideoEncoder()
    out = encoder(torch.randn(16, 3, 8, 64, 64))
    assert tuple(out.shape) == (16, 64, 2, 4, 4)
    assert 20_000 <= sum(p.numel() for p in encoder.parameters()) <= 150_000


def test_lite_video_keeps_left_and_right_apart() -> None:
    """A change in the left quarter of the crop reaches the left grid column, never the right."""
    torch.manual_seed(0)
    encoder = LiteVideoEncoder().eval()
    x = torch.randn(2, 3, 8, 64, 64)
    for cols, changed, untouched in ((slice(0, 16), 0, 3), (slice(48, 64), 3, 0)):
        y = x.clone()
        y[..., cols] += 3.0 * torch.randn_like(y[..., cols])
        with torch.no_grad():
            a, b = encoder(x), encoder(y)
        torch.testing.assert_close(a[..., untouched], b[..., untouched], rtol=0, atol=1e-5)
        assert (a[..., changed] - b[..., changed]).abs().max() > 1e-2


def test_sequence_projection_is_a_bias_free_conv_over_time() -> None:
    encoder = SequenceProjection(35, 8)
    x = torch.randn(2, 50, 35)
    assert encoder.proj.bias is None
    torch.testing.assert_close(encoder(x), torch.einsum("bli,di->bdl", x, encoder.proj.weight[:, :, 0]))


@pytest.mark.parametrize(
    ("encoder", "input_shape", "match"),
    [
        (thin_resnext(), (1, 8, 32, 32), r"\(3, T, H, W\)"),
        (thin_resnext(), (3, 32, 32), r"\(3, T, H, W\)"),
        (LiteVideoEncoder(), (3, 8, 64), r"\(3, T, H, W\)"),
        (MfccCnn(), (20, 212), r"\(13, frames\)"),
        (MfccCnn(), (13, 10), "more input frames"),
        (SequenceProjection(74, 30), (50, 35), r"\(L, 74\)"),
        (SequenceProjection(74, 30, kernel_size=5), (3, 74), "L >= kernel_size"),
    ],
)
def test_output_shape_rejects_bad_inputs(encoder: nn.Module, input_shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encoder.output_shape(input_shape)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: ResNeXt3D(cardinality=32, base_width=48), "cardinality` must divide `base_width"),
        (lambda: ResNeXt3D(layers=()), "layers"),
        (lambda: LiteVideoEncoder(width=10), "multiple of 4"),
        (lambda: MfccCnn(widths=(32, 64)), "3 channel counts"),
        (lambda: MfccCnn(dropout=1.0), "0 <= dropout < 1"),
        (lambda: SequenceProjection(0, 30), "in_dim >= 1"),
    ],
)
def test_constructors_reject_bad_arguments(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()
