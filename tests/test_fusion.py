"""Fusion blocks: shapes, per-sample independence, gradients, TACFN's switches, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tacfn.errors import ConfigError
from tacfn.model import configure
from tacfn.model._spec import FusionSpec, ModalitySpec
from tacfn.model.fusion import (
    create_fusion_block,
    get_fusion_block_class,
    list_fusion_blocks,
    register_fusion_block,
)
from tacfn.model.fusion._attention import MultiHeadAttention, attend
from tacfn.model.fusion._config import FusionConfig
from tacfn.model.fusion._head import PooledConcatHead
from tacfn.model.fusion._layers import TransformerEncoder, causal_mask

PAPER = FusionSpec(
    (ModalitySpec("video", "grid", (2048, 2, 7, 7)), ModalitySpec("audio", "sequence", (64, 26), "flatten")),
    (8,),
)
LITE = FusionSpec(
    (ModalitySpec("video", "grid", (64, 2, 4, 4)), ModalitySpec("audio", "sequence", (64, 12), "flatten")),
    (8,),
)
IEMOCAP = FusionSpec(
    (
        ModalitySpec("text", "sequence", (300, 20)),
        ModalitySpec("audio", "sequence", (74, 40)),
        ModalitySpec("vision", "sequence", (35, 50)),
    ),
    (4, 2),
)
ONE_MODALITY = FusionSpec((LITE.modalities[1],), (8,))
SPECS = {"lite": LITE, "iemocap": IEMOCAP}
SMALL = {"d": 16, "heads": 2, "layers": 2}
BLOCKS = list_fusion_blocks()

# TACFN switch settings; every one must reach all of its parameters and stay per-sample.
TACFN_VARIANTS = [
    {},
    {"selection": "mean"},
    {"selection": "none"},
    {"fused_weight": False},
    {"residual": False},
    {"causal": False},
    {"direction": "video->audio"},
    {"direction": "both"},
    {"attended_pool": "separate"},
    {"attended_pool": "separate", "residual": False, "direction": "both"},
]


def _features(spec: FusionSpec, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m.name: torch.randn(batch, *m.shape, generator=gen) for m in spec.modalities}


def _build(name: str, spec: FusionSpec, seed: int = 0, **kwargs) -> nn.Module:
    if name == "tacfn" and "video" not in spec.names:
        kwargs.setdefault("direction", "both")
    torch.manual_seed(seed)
    small = {k: v for k, v in SMALL.items() if k in get_fusion_block_class(name).options}
    return create_fusion_block(name, spec, **{**small, **kwargs})


def _copy_shared(src: nn.Module, dst: nn.Module) -> None:
    """Give ``dst`` every weight of ``src`` that it also has (same name and shape)."""
    dst_state = dst.state_dict()
    shared = {k: v for k, v in src.state_dict().items() if k in dst_state and v.shape == dst_state[k].shape}
    assert shared, "the two blocks share no weights"
    dst.load_state_dict(shared, strict=False)


def _loss(logits: torch.Tensor, spec: FusionSpec, seed: int = 0) -> torch.Tensor:
    classes = spec.out_shape[-1]
    gen = torch.Generator().manual_seed(seed)
    targets = torch.randint(classes, (logits.numel() // classes,), generator=gen)
    return nn.functional.cross_entropy(logits.reshape(-1, classes), targets)


def _tacfn_cases() -> list:
    return [pytest.param("tacfn", LITE, kw, id=f"tacfn-lite-{kw}") for kw in TACFN_VARIANTS] + [
        pytest.param("tacfn", IEMOCAP, {"direction": "audio->vision,text->vision"}, id="tacfn-iemocap-2to1"),
        pytest.param("tacfn", IEMOCAP, {"direction": "both", "selection": "none"}, id="tacfn-iemocap-both-none"),
    ]


def _block_cases() -> list:
    return [pytest.param(b, spec, {}, id=f"{b}-{s}") for b in BLOCKS for s, spec in SPECS.items()]


# -- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_logits_shape(name: str, spec_name: str) -> None:
    spec = SPECS[spec_name]
    logits = _build(name, spec)(_features(spec, 3))
    assert logits.shape == (3, *spec.out_shape)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BLOCKS)
def test_paper_spec_logits_shape(name: str) -> None:
    block = create_fusion_block(name, PAPER)  # the paper's defaults: d=64, 8 heads, 5 layers
    block.eval()
    with torch.no_grad():
        logits = block(_features(PAPER, 2))
    assert logits.shape == (2, 8)


def test_paper_tacfn_parameter_count() -> None:
    d, video, audio_flat = 64, 2048, 64 * 26
    fused_weight = (video * d + d) + d * d + (d + 1)  # W_v with bias, W_a without, w with bias
    layer = (4 * d * d + 4 * d) + (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * 2 * d  # attn, FFN, 2 LNs
    selection = 5 * layer + 2 * d  # 5 layers and the final LayerNorm; audio is already d-wide
    head = (video + audio_flat) * 8 + 8
    block = create_fusion_block("tacfn", PAPER)
    total = sum(p.numel() for p in block.parameters())
    assert total == fused_weight + selection + head == 415_049


def test_paper_head_width() -> None:
    head = PooledConcatHead(PAPER, head_dropout=0.4)
    assert (head.fc.in_features, head.fc.out_features) == (3712, 8)


# -- per-sample computation -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "spec", "kwargs"), _block_cases() + _tacfn_cases())
def test_logits_do_not_depend_on_batch_mates(name: str, spec: FusionSpec, kwargs: dict) -> None:
    block = _build(name, spec, **kwargs).eval()
    features = _features(spec, 4)
    with torch.no_grad():
        batched = block(features)
        for i in range(4):
            alone = block({k: v[i : i + 1] for k, v in features.items()})
            torch.testing.assert_close(alone[0], batched[i], atol=1e-5, rtol=1e-5)


# -- training reaches every parameter -------------------------------------------------------


@pytest.mark.parametrize(("name", "spec", "kwargs"), _block_cases() + _tacfn_cases())
def test_train_step_reaches_every_parameter(name: str, spec: FusionSpec, kwargs: dict) -> None:
    block = _build(name, spec, **kwargs).train()
    loss = _loss(block(_features(spec, 4)), spec)
    loss.backward()
    assert torch.isfinite(loss)
    for key, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), key
        if key.endswith("score.bias"):
            # The softmax over positions cancels a shift of every score: no gradient, by design.
            assert param.grad.abs().max() < 1e-6, key
        else:
            assert param.grad.abs().sum() > 0, f"{key} gets no gradient"


# -- TACFN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "base", "change"),
    [
        ("tacfn", {}, {"selection": "mean"}),
        ("tacfn", {}, {"selection": "none"}),
        ("tacfn", {"selection": "mean"}, {"selection": "none"}),
        ("tacfn", {}, {"fused_weight": False}),
        ("tacfn", {}, {"residual": False}),
        ("tacfn", {}, {"causal": False}),
        ("tacfn", {}, {"direction": "both"}),
        ("tacfn", {"attended_pool": "separate"}, {"residual": False}),
        ("mult", {}, {"causal": False}),
    ],
    ids=lambda x: x if isinstance(x, str) else str(x),
)
def test_each_switch_changes_the_computation(name: str, base: dict, change: dict) -> None:
    reference = _build(name, LITE, **base).eval()
    switched = _build(name, LITE, seed=1, **{**base, **change}).eval()
    _copy_shared(reference, switched)
    features = _features(LITE, 3)
    with torch.no_grad():
        logits, switched_logits = reference(features), switched(features)
    # TACFN's alpha moves the logits only a little (v * alpha + v with alpha ~ 1/(H*W)).
    assert (logits - switched_logits).abs().max() > 1e-6
    if name == "tacfn" and set(change) & {"selection", "fused_weight", "causal"}:
        assert (reference.last_alpha["video"] - switched.last_alpha["video"]).abs().max() > 1e-4


def test_tacfn_alpha_sums_to_one_over_each_time_steps_positions() -> None:
    block = _build("tacfn", LITE).eval()
    with torch.no_grad():
        block(_features(LITE, 3))
    alpha = block.last_alpha["video"]
    assert set(block.last_alpha) == {"video"}
    assert alpha.shape == (3, 2, 4, 4) and not alpha.requires_grad
    torch.testing.assert_close(alpha.sum(dim=(2, 3)), torch.ones(3, 2))
    assert (alpha.flatten(2).std(dim=2) > 0).all()  # the weights are not uniform


def test_tacfn_alpha_over_sequence_steps() -> None:
    block = _build("tacfn", IEMOCAP, direction="both").eval()
    with torch.no_grad():
        block(_features(IEMOCAP, 2))
    assert set(block.last_alpha) == {"text", "audio", "vision"}
    for name, alpha in block.last_alpha.items():
        steps = IEMOCAP[name].shape[1]
        assert alpha.shape == (2, steps)
        torch.testing.assert_close(alpha.sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("fused_weight", [True, False])
def test_fused_weight_decides_whether_audio_moves_alpha(fused_weight: bool) -> None:
    block = _build("tacfn", LITE, fused_weight=fused_weight).eval()
    features = _features(LITE, 2)
    other_audio = {**features, "audio": _features(LITE, 2, seed=1)["audio"]}
    with torch.no_grad():
        block(features)
        alpha = block.last_alpha["video"]
        block(other_audio)
        other_alpha = block.last_alpha["video"]
    if fused_weight:
        assert (alpha - other_alpha).abs().max() > 1e-4
    else:
        assert torch.equal(alpha, other_alpha)
        assert len(block.selection) == 0  # no source summary is built when it plays no part


@pytest.mark.parametrize("residual", [True, False])
def test_reinforcement_with_uniform_alpha(residual: bool) -> None:
    block = _build("tacfn", LITE, residual=residual).eval()
    nn.init.zeros_(block.weights["video"].score.weight)  # equal scores -> alpha = 1/(H*W)
    features = _features(LITE, 2)
    scale = 1 / 16 + (1 if residual else 0)
    with torch.no_grad():
        logits = block(features)
        expected = block.head({"video": features["video"] * scale, "audio": features["audio"]})
    torch.testing.assert_close(block.last_alpha["video"], torch.full((2, 2, 4, 4), 1 / 16))
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("direction", ["audio->video", "both"])
def test_pooling_reinforced_features_matches_building_them(residual: bool, direction: str) -> None:
    """The head pools t * alpha (+ t) without building it; gradients agree as well."""
    block = _build("tacfn", LITE, residual=residual, direction=direction).eval()
    features = {k: v.requires_grad_() for k, v in _features(LITE, 3).items()}
    logits = block(features)
    summaries = {name: select(features[name]) for name, select in block.selection.items()}
    alphas = {t: block.weights[t](features[t], [summaries[s] for s in src]) for t, src in block.sources.items()}
    assert alphas["video"].std() > 0, "a non-uniform alpha, so the reinforcement matters"
    built = {
        name: x * alphas[name].unsqueeze(1) + (x if residual else 0) if name in alphas else x
        for name, x in features.items()
    }
    expected = block.head(built)
    torch.testing.assert_close(logits, expected)
    grads = torch.autograd.grad(logits.sum(), [features["video"], features["audio"]])
    reference = torch.autograd.grad(expected.sum(), [features["video"], features["audio"]])
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("direction", ["audio->video", "both"])
def test_separate_attended_pool_gives_the_head_the_weighted_sum_beside_the_mean(residual: bool, direction: str) -> None:
    """attended_pool="separate": each target reaches the classifier as its plain pooling (with the
    residual) and, at full scale, sum_p alpha_p t_p averaged over time steps."""
    block = _build("tacfn", LITE, residual=residual, direction=direction, attended_pool="separate").eval()
    features = _features(LITE, 3)
    logits = block(features)
    parts = []
    for name in LITE.names:
        x, alpha = features[name], block.last_alpha.get(name)
        if alpha is None:
            parts.append(block.head.pools[name](x))
            continue
        if residual:
            parts.append(block.head.pools[name](x))
        per_step = alpha.flatten(2) if alpha.dim() == 4 else alpha.unsqueeze(1)  # (B, groups, P/groups)
        grouped = x.flatten(2).view(len(x), x.shape[1], per_step.shape[1], -1)  # (B, C, groups, P/groups)
        parts.append((grouped * per_step.unsqueeze(1)).sum(-1).mean(-1))
    expected = block.head.fc(torch.cat(parts, dim=1))
    torch.testing.assert_close(logits, expected)
    paper = _build("tacfn", LITE, residual=residual, direction=direction)
    extra = sum(LITE[t].channels for t in block.sources) - (0 if residual else sum(LITE[t].head_features for t in block.sources))
    assert block.head.fc.in_features == paper.head.fc.in_features + extra


def test_unknown_attended_pool_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown attended_pool 'sum'; valid: \['mean', 'separate'\]"):
        _build("tacfn", LITE, attended_pool="sum")


# -- heads and late fusion -------------------------------------------------------------------


def test_pooled_concat_head_pools_as_the_spec_says() -> None:
    head = PooledConcatHead(LITE, head_dropout=0.4).eval()
    features = _features(LITE, 2)
    pooled = torch.cat([features["video"].mean(dim=(2, 3, 4)), features["audio"].reshape(2, -1)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(head(features), head.fc(pooled))
    head.train()
    torch.manual_seed(0)
    assert not torch.equal(head(features), head(features))  # dropout on the flattened audio


def test_late_fusion_combines_per_modality_classifiers() -> None:
    average = _build("late_average", IEMOCAP).eval()
    product = _build("late_product", IEMOCAP).eval()
    _copy_shared(average, product)
    features = _features(IEMOCAP, 3)
    with torch.no_grad():
        per_modality = [average.classifiers[m](features) for m in IEMOCAP.names]
        torch.testing.assert_close(average(features), torch.stack(per_modality).mean(dim=0))
        probs = torch.stack([p.softmax(dim=-1) for p in per_modality]).prod(dim=0)
        torch.testing.assert_close(product(features).softmax(dim=-1), probs / probs.sum(-1, keepdim=True))


# -- transformer layers ------------------------------------------------------------------------


def test_causal_mask_lines_up_unaligned_sequences() -> None:
    torch.testing.assert_close(causal_mask(5, 5), torch.ones(5, 5, dtype=torch.bool).triu(1))
    mask = causal_mask(3, 7)
    assert not mask[:, 0].any()  # every query sees at least the first key
    assert not mask[-1].any()  # the last query sees everything
    assert (mask.sum(dim=1).diff() <= 0).all()  # later queries see more


@pytest.mark.parametrize("cross_modal", [False, True])
def test_causal_encoder_ignores_later_steps(cross_modal: bool) -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 2, 2, causal=True, cross_modal=cross_modal).eval()
    x = torch.randn(2, 6, 16)
    source = torch.randn(2, 6, 16) if cross_modal else None
    later = torch.zeros(2, 6, 16)
    later[:, 3:] = torch.randn(2, 3, 16)  # changes steps 3.. only
    with torch.no_grad():
        out = encoder(x, source)
        changed = encoder(x + later, source + later) if cross_modal else encoder(x + later)
    torch.testing.assert_close(out[:, :3], changed[:, :3])
    assert (out[:, 3:] - changed[:, 3:]).abs().max() > 1e-3


@pytest.mark.parametrize("cross_modal", [False, True])
def test_attention_matches_torch_multihead_attention(cross_modal: bool) -> None:
    torch.manual_seed(3)
    reference = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    torch.manual_seed(3)
    attention = MultiHeadAttention(16, 4).eval()
    # Same initial weights from the same seed, and the same keys: checkpoints load either way.
    assert reference.state_dict().keys() == attention.state_dict().keys()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(attention.state_dict()[key], value, rtol=0, atol=0)
    x = torch.randn(3, 7, 16)
    source = torch.randn(3, 5, 16) if cross_modal else x
    mask = causal_mask(7, source.shape[1])
    expected, _ = reference(x, source, source, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(attention(x, source if cross_modal else None, mask=mask), expected)


@pytest.mark.parametrize("masked", [False, True])
def test_attention_fused_and_cpu_paths_agree_with_gradients(masked: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, length, 8, generator=gen, requires_grad=True) for length in (6, 9, 9))
    mask = causal_mask(6, 9) if masked else None
    outputs, grads = [], []
    for fused in (True, False):
        out = attend(q, k, v, mask, 0.0, fused=fused)
        outputs.append(out)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, 8)).sum(), (q, k, v)))
    torch.testing.assert_close(outputs[0], outputs[1])
    for fused_grad, cpu_grad in zip(*grads):
        torch.testing.assert_close(fused_grad, cpu_grad)


def test_attention_dropout_acts_in_training_only() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(16, 2, dropout=0.5)
    x = torch.randn(2, 6, 16)
    train_out = attention(x)
    attention.eval()
    assert (train_out - attention(x)).abs().max() > 1e-3
    torch.testing.assert_close(attention(x), attention(x))
    with pytest.raises(ValueError, match=r"`heads` must divide `d`, but got heads=3, d=16"):
        MultiHeadAttention(16, 3)


# -- declared options ----------------------------------------------------------------------


class _ReadRecorder:
    """A FusionConfig stand-in that records which fields a block reads."""

    def __init__(self, cfg: FusionConfig) -> None:
        self._cfg, self.read = cfg, set()

    def __getattr__(self, name: str):
        self.read.add(name)
        return getattr(self._cfg, name)


@pytest.mark.parametrize("name", BLOCKS)
def test_options_name_exactly_the_settings_a_block_reads(name: str) -> None:
    cls = get_fusion_block_class(name)
    recorder = _ReadRecorder(FusionConfig(name=name, direction="both", **SMALL))
    cls(LITE, recorder)
    assert set(cls.options) == recorder.read - {"name"}
    assert set(cls.options) <= set(FusionConfig.field_names())


# -- TFN and LMF ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_tfn_fuses_the_outer_product_with_every_unimodal_term(spec_name: str) -> None:
    spec, dim = SPECS[spec_name], 3
    block = _build("tfn", spec, dim=dim).eval()
    features = _features(spec, 2)
    with torch.no_grad():
        vectors = block.vectors(features)
        fused = block.fuse(features)
    assert fused.shape == (2, (dim + 1) ** len(spec.modalities))
    grid = fused.view(2, *[dim + 1] * len(spec.modalities))
    ones = [-1] * len(spec.modalities)
    for i, h in enumerate(vectors):  # the 1 of every other modality picks out modality i alone
        index = [slice(None), *ones]
        index[i + 1] = slice(0, dim)
        torch.testing.assert_close(grid[tuple(index)], h)
    torch.testing.assert_close(grid[(slice(None), *ones)], torch.ones(2))
    first, second = vectors[0], vectors[1]  # and every pair of modalities multiplies
    index = [slice(None), slice(0, dim), slice(0, dim), *ones[2:]]
    torch.testing.assert_close(grid[tuple(index)], first[:, :, None] * second[:, None, :])


def test_tfn_keeps_the_other_modalities_terms_when_one_is_dropped() -> None:
    block = _build("tfn", LITE, dim=3).eval()
    features = _features(LITE, 2)
    with torch.no_grad():
        video = block.vectors(features)[0]
        fused = block.fuse({**features, "audio": torch.zeros_like(features["audio"])}).view(2, 4, 4)
    torch.testing.assert_close(fused[:, :3, 3], video)
    assert not fused[:, :, :3].any()


@pytest.mark.parametrize("rank", [1, 3])
def test_lmf_matches_the_low_rank_formula_computed_naively(rank: int) -> None:
    spec, dim = IEMOCAP, 2
    block = _build("lmf", spec, dim=dim, rank=rank).eval()
    with torch.no_grad():
        for p in block.parameters():  # the bias is zero at the start: give it values to check
            p.copy_(torch.randn_like(p))
        features = _features(spec, 2)
        fused = block.fuse(features)
        for b in range(2):
            z = {m.name: torch.cat([features[m.name][b].mean(dim=1), torch.ones(1)]) for m in spec.modalities}
            expected = block.bias.clone()
            for i in range(rank):
                term = torch.ones(dim)
                for m in spec.modalities:
                    term = term * (z[m.name] @ block.factors[m.name][i])
                expected = expected + block.rank_weights[0, i] * term
            torch.testing.assert_close(fused[b], expected, atol=1e-4, rtol=1e-4)


def test_lmf_and_tfn_parameter_counts() -> None:
    video, audio = 64, 64 * 12  # LITE: mean-pooled video, flattened audio
    lmf = create_fusion_block("lmf", LITE, dim=16, rank=4)
    assert sum(p.numel() for p in lmf.parameters()) == 4 * (video + 1 + audio + 1) * 16 + 4 + 16 + (16 * 8 + 8)
    tfn = create_fusion_block("tfn", LITE, dim=16, d=32)
    mlp = (17 * 17 * 32 + 32) + (32 * 32 + 32) + (32 * 8 + 8)
    assert sum(p.numel() for p in tfn.parameters()) == (video + audio) * 16 + mlp


# -- MCBP, MMTM and MSAF -----------------------------------------------------------------------


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_mcbp_fuses_the_count_sketch_of_the_outer_product(spec_name: str) -> None:
    """The product of the sketches' FFTs is the sketch of the flattened outer product, whose entry
    (i, j, ...) goes to position h_1[i] + h_2[j] + ... mod sketch_dim with sign s_1[i] s_2[j] ..."""
    spec, width = SPECS[spec_name], 32
    block = _build("mcbp", spec, sketch_dim=width).eval()
    features = _features(spec, 2)
    with torch.no_grad():
        fused = block.fuse(features)
        outer = torch.ones(2, 1)
        hashes, signs = torch.zeros(1, dtype=torch.long), torch.ones(1)
        for m in spec.modalities:
            z = block.pools[m.name](features[m.name])
            outer = (outer[:, :, None] * z[:, None, :]).flatten(1)
            hashes = (hashes[:, None] + getattr(block, f"hash_{m.name}")[None, :]).flatten() % width
            signs = (signs[:, None] * getattr(block, f"sign_{m.name}")[None, :]).flatten()
        expected = torch.zeros(2, width).index_add(1, hashes, outer * signs)
    assert outer.shape[1] == math.prod(m.head_features for m in spec.modalities)
    torch.testing.assert_close(fused, expected, atol=1e-3, rtol=1e-4)


def test_mcbp_hashes_follow_the_seed_and_travel_with_the_weights() -> None:
    first, again, other = (_build("mcbp", LITE, seed=s).eval() for s in (0, 0, 1))
    assert torch.equal(first.hash_audio, again.hash_audio) and torch.equal(first.sign_audio, again.sign_audio)
    assert not torch.equal(first.hash_audio, other.hash_audio)
    assert set(first.sign_video.unique().tolist()) == {-1.0, 1.0}
    assert int(first.hash_video.max()) < 1024
    other.load_state_dict(first.state_dict())
    features = _features(LITE, 2)
    with torch.no_grad():
        torch.testing.assert_close(other(features), first(features))


def test_mmtm_gates_lie_in_0_2_and_each_depends_on_the_other_modality() -> None:
    block = _build("mmtm", LITE).eval()
    features = _features(LITE, 3)
    with torch.no_grad():
        for p in block.parameters():  # larger weights than at the start, to reach both ends of (0, 2)
            p.mul_(8)
        gates = block.gates(features)
        other_audio = block.gates({**features, "audio": _features(LITE, 3, seed=1)["audio"]})
        other_video = block.gates({**features, "video": _features(LITE, 3, seed=1)["video"]})
    assert {k: tuple(v.shape) for k, v in gates.items()} == {"video": (3, 64), "audio": (3, 64)}
    for gate in gates.values():
        assert (gate > 0).all() and (gate < 2).all()
        assert gate.min() < 0.5 and gate.max() > 1.5
    assert (gates["video"] - other_audio["video"]).abs().max() > 1e-3
    assert (gates["audio"] - other_video["audio"]).abs().max() > 1e-3


def test_mmtm_scales_each_channel_by_its_gate_before_the_classifier() -> None:
    block = _build("mmtm", IEMOCAP).eval()
    features = _features(IEMOCAP, 2)
    with torch.no_grad():
        gates = block.gates(features)
        expected = block.head({k: x * gates[k][:, :, None] for k, x in features.items()})
        torch.testing.assert_close(block(features), expected)


@pytest.mark.parametrize("spec_name", sorted(SPECS))
def test_msaf_attention_splits_each_channel_over_all_blocks(spec_name: str) -> None:
    spec, dim = SPECS[spec_name], 16
    block = _build("msaf", spec, dim=dim).eval()
    features = _features(spec, 2)
    with torch.no_grad():
        attention = block.attention(features)
        logits = block(features)
        blocks = [math.ceil(m.channels / dim) for m in spec.modalities]  # IEMOCAP pads 300, 74, 35
        assert attention.shape == (2, sum(blocks), dim)
        torch.testing.assert_close(attention.sum(dim=1), torch.ones(2, dim))
        assert (attention.std(dim=1) > 0).all()  # not uniform
        weighted, start = {}, 0
        for m, n in zip(spec.modalities, blocks):  # channel c of a modality is channel c % dim of its block c // dim
            per_channel = attention[:, start : start + n].flatten(1)[:, : m.channels]
            weighted[m.name] = features[m.name] * per_channel.view(2, m.channels, *[1] * (len(m.shape) - 1))
            start += n
        torch.testing.assert_close(logits, block.head(weighted))


def test_msaf_attends_to_a_modality_with_zero_features() -> None:
    block = _build("msaf", LITE).eval()
    features = {**_features(LITE, 2), "audio": torch.zeros(2, 64, 12)}
    with torch.no_grad():
        attention = block.attention(features)
        logits = block(features)
    audio = attention[:, 4:]  # 64 video channels make blocks 0-3, 64 audio channels blocks 4-7
    assert torch.isfinite(audio).all() and (audio > 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(2, 16))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ["mcbp", "mmtm", "msaf"])
@pytest.mark.parametrize("dropped", ["video", "audio"])
def test_a_dropped_modality_gives_finite_logits_and_gradients(name: str, dropped: str) -> None:
    """Modality dropout zeroes a modality's features: the encoders below must still get finite gradients."""
    block = _build(name, LITE).train()
    features = {**_features(LITE, 4), dropped: torch.zeros(4, *LITE[dropped].shape)}
    features = {k: v.requires_grad_() for k, v in features.items()}
    logits = block(features)
    _loss(logits, LITE).backward()
    assert torch.isfinite(logits).all()
    for key, tensor in [*block.named_parameters(), *features.items()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), key


def test_mcbp_mmtm_and_msaf_parameter_counts() -> None:
    video, audio, head = 64, 64, (64 + 64 * 12) * 8 + 8  # LITE: channels, and the paper's classifier
    mcbp = create_fusion_block("mcbp", LITE, sketch_dim=1024)
    assert sum(p.numel() for p in mcbp.parameters()) == 1024 * 8 + 8 == 8_200
    mmtm = create_fusion_block("mmtm", LITE, reduction=4)
    joint = (video + audio) // 4
    squeeze, excite = (video + audio) * joint + joint, (joint * video + video) + (joint * audio + audio)
    assert sum(p.numel() for p in mmtm.parameters()) == squeeze + excite + head == 15_016
    msaf = create_fusion_block("msaf", LITE, dim=16, reduction=4)
    blocks = video // 16 + audio // 16
    assert sum(p.numel() for p in msaf.parameters()) == (16 * 4 + 4) + blocks * (4 * 16 + 16) + head == 7_372


@pytest.mark.parametrize(
    ("name", "spec", "kwargs", "message"),
    [
        ("lmf", LITE, {"rank": 0}, r"fusion block 'lmf': `rank >= 1` must hold, but got rank=0"),
        ("tfn", LITE, {"dim": 0}, r"fusion block 'tfn': `dim >= 1` must hold, but got dim=0"),
        ("lmf", LITE, {"dim": -2}, r"fusion block 'lmf': `dim >= 1` must hold, but got dim=-2"),
        ("tfn", LITE, {"rank": 8}, r"fusion block 'tfn' does not read option 'rank' \(got rank=8\); it reads \['d', 'dim', 'head_dropout'\]"),
        ("concat", LITE, {"dim": 8}, r"fusion block 'concat' does not read option 'dim' \(got dim=8\)"),
        ("concat", LITE, {"heads": 2}, r"fusion block 'concat' does not read option 'heads' \(got heads=2\)"),
        ("late_average", LITE, {"attended_pool": "separate"}, r"fusion block 'late_average' does not read option 'attended_pool' \(got attended_pool='separate'\)"),
        ("mult", LITE, {"residual": False}, r"fusion block 'mult' does not read option 'residual' \(got residual=False\)"),
        ("mcbp", LITE, {"sketch_dim": 0}, r"fusion block 'mcbp': `sketch_dim >= 1` must hold, but got sketch_dim=0"),
        ("mcbp", LITE, {"reduction": 2}, r"fusion block 'mcbp' does not read option 'reduction' \(got reduction=2\); it reads \['head_dropout', 'sketch_dim'\]"),
        ("mmtm", LITE, {"reduction": 512}, r"fusion block 'mmtm': reduction=512 leaves the joint squeeze no channels \(the modalities have 128 channels in all\); valid: 1\.\.128$"),
        ("mmtm", LITE, {"dim": 8}, r"fusion block 'mmtm' does not read option 'dim' \(got dim=8\)"),
        ("msaf", LITE, {"reduction": 32}, r"fusion block 'msaf': dim=16 // reduction=32 leaves the joint representation no channels; valid: reduction 1\.\.16$"),
        ("msaf", LITE, {"dim": 2, "reduction": 4}, r"fusion block 'msaf': dim=2 // reduction=4 leaves .*; valid: reduction 1\.\.2$"),
        *[(name, ONE_MODALITY, {}, rf"fusion block '{name}' fuses two or more modalities, but got \['audio'\]; for one modality use model.fusion.name: concat$")
          for name in ("mcbp", "mmtm", "msaf")],
    ],
)
def test_bad_block_options_give_a_one_line_config_error(name: str, spec: FusionSpec, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_fusion_block(name, spec, **kwargs)
    assert "\n" not in str(info.value)


def test_configure_rejects_an_option_the_block_does_not_read() -> None:
    with pytest.raises(ConfigError, match=r"fusion block 'tacfn' does not read option 'rank'"):
        configure("lite", fusion={"rank": 2})
    assert configure("lite", fusion={"name": "lmf", "rank": 2}).fusion.rank == 2
    with pytest.raises(ConfigError, match=r"fusion block 'concat' does not read option 'layers' \(got layers=3\)"):
        configure("lite", fusion={"name": "concat", "layers": 3})
    # An option spelled out at the preset's own value changes nothing and passes, for any block.
    assert configure("iemocap", fusion={"name": "concat", "d": 30}).fusion.name == "concat"
    assert configure("lite", fusion={"name": "concat", "attended_pool": "mean"}).fusion.name == "concat"


# -- errors ----------------------------------------------------------------------------------


def test_duplicate_registration_raises() -> None:
    original = get_fusion_block_class("tacfn")
    with pytest.raises(ValueError, match="'tacfn' is already registered"):
        register_fusion_block("tacfn")(type("Impostor", (nn.Module,), {}))
    assert get_fusion_block_class("tacfn") is original


def test_unknown_block_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown fusion block 'tacfm'; valid: \['concat'.*'tacfn'.*\]"):
        create_fusion_block("tacfm", LITE)


def test_unknown_option_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown fusion option\(s\) \['head'\]"):
        create_fusion_block("tacfn", LITE, head=4)


def test_heads_must_divide_d() -> None:
    with pytest.raises(ValueError, match="`heads` must divide `d`.*valid heads for d=16: \\[1, 2, 4, 8, 16\\]"):
        create_fusion_block("mult", LITE, d=16, heads=3)


def test_invalid_direction_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"invalid fusion direction 'text->video'; valid: \['audio->video', "):
        create_fusion_block("tacfn", LITE, direction="text->video")


@pytest.mark.parametrize("direction", ["audio->video", "both"])
def test_tacfn_needs_two_modalities(direction: str) -> None:
    single = FusionSpec((LITE.modalities[1],), (8,))
    with pytest.raises(ValueError, match=r"the tacfn block needs at least two modalities .* got \['audio'\]; .* concat"):
        create_fusion_block("tacfn", single, direction=direction)


def test_mult_needs_two_modalities() -> None:
    single = FusionSpec((LITE.modalities[1],), (8,))
    with pytest.raises(ValueError, match="at least 2 modalities"):
        create_fusion_block("mult", single)


@pytest.mark.parametrize("name", BLOCKS)
def test_features_of_the_wrong_shape_name_the_modality(name: str) -> None:
    block = _build(name, LITE)
    features = {**_features(LITE, 2), "video": torch.randn(2, 64, 2, 5, 5)}
    with pytest.raises(ValueError, match=r"features of 'video' must have shape \(B, 64, 2, 4, 4\)"):
        block(features)


def test_the_zoo_plan_runs_every_registered_block() -> None:
    from tacfn.search import load_plan

    plan = load_plan("ablation_zoo")
    names = {overrides.get("model.fusion.name", "tacfn") for overrides in plan.variants.values()}
    assert names == set(BLOCKS)
