"""Planted effects of the synthetic RAVDESS generator: each effect left out is a null its
cue cannot read, recorded in the tree and the prepared manifest, with ceilings to match."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tacfn import tasks
from tacfn.cli import main
from tacfn.config import parse_run_config
from tacfn.data.prepare import prepare_ravdess
from tacfn.data.prepared import PreparedDataset
from tacfn.data.preprocessing import LITE_PREPROCESS
from tacfn.data.synth import (
    EFFECTS,
    SYNTHETIC_FILE,
    _render_clip,
    check_effects,
    planted_bits,
    planted_ceilings,
    write_synthetic_ravdess,
)
from tacfn.errors import ConfigError, DataError

# sha256 of the rendered arrays of actor 1's first clip of each emotion, seed 0, written by the
# generator before effects existed: trees and caches made then must stay valid.
_RENDERED_BEFORE_EFFECTS = "81626cf8ec72e31bf4c82d191cbc8aaa445e8f077c4b3c83cb3d7b0ad530dd69"
_EFFECTS_RULE = r"`effects` must be a non-empty subset of audio, video, cross, each named once, but got"


def _rendered_digest(effects: tuple[str, ...] | None) -> str:
    digest = hashlib.sha256()
    for emotion in range(1, 9):
        rng = np.random.default_rng([0, 1, emotion, 1, 1, 1])
        kwargs = {} if effects is None else {"effects": effects}
        frames, landmarks, audio = _render_clip(rng, label=emotion - 1, **kwargs)
        for array in (frames, landmarks.round(3), audio.round(4)):  # rounded: immune to last-bit libm differences
            digest.update(array.tobytes())
    return digest.hexdigest()


def test_all_effects_render_the_clips_the_generator_always_rendered():
    assert _rendered_digest(None) == _RENDERED_BEFORE_EFFECTS
    assert _rendered_digest(EFFECTS) == _RENDERED_BEFORE_EFFECTS
    assert _rendered_digest(("audio", "video")) != _RENDERED_BEFORE_EFFECTS


def test_a_tree_with_effects_named_in_any_order_is_the_default_tree_and_records_them(tmp_path: Path):
    default = write_synthetic_ravdess(tmp_path / "default", actors=1, clips_per_actor=1, workers=1)
    named = write_synthetic_ravdess(tmp_path / "named", actors=1, clips_per_actor=1, workers=1, effects=["cross", "video", "audio"])
    files = sorted(path.relative_to(default) for path in default.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(named) for path in named.rglob("*") if path.is_file())
    for name in files:
        assert (default / name).read_bytes() == (named / name).read_bytes(), name
    record = json.loads((named / SYNTHETIC_FILE).read_text())
    assert record == {"generator_version": 1, "seed": 0, "actors": 1, "clips_per_actor": 1, "effects": list(EFFECTS)}


def _measured_cues(frames: np.ndarray, landmarks: np.ndarray, audio: np.ndarray) -> tuple[int, int, int, int]:
    """(pitch, side, stripes, bright_side) read back from a rendered clip, as a model would see them."""
    spectrum = np.abs(np.fft.rfft(audio[: 1 << 14]))
    freqs = np.fft.rfftfreq(1 << 14, 1 / 44_100)

    def energy(hz: float) -> float:
        return float(spectrum[np.abs(freqs - hz) < 0.03 * hz].sum())

    pitch, side = int(energy(700) > energy(300)), int(energy(4500) > energy(2000))
    first = landmarks[0]  # the landmarks' box is the face square (to +-1 px of jitter)
    left, top = np.round(first.min(axis=0)).astype(int)
    size = int(round(first[:, 0].max() - first[:, 0].min())) + 1
    face = frames[0, top : top + size, left : left + size].astype(np.float64).mean(-1)

    def region(y0: float, y1: float, x0: float, x1: float) -> np.ndarray:
        return face[int(y0 * size) : int(y1 * size), int(x0 * size) : int(x1 * size)]

    band = region(0.16, 0.41, 0.15, 0.85)
    stripes = int(np.abs(np.diff(band, axis=1)).mean() > np.abs(np.diff(band, axis=0)).mean())
    bright_side = int(region(0.6, 0.85, 0.62, 0.85).mean() > region(0.6, 0.85, 0.15, 0.38).mean())
    return pitch, side, stripes, bright_side


def _render_many(effects: tuple[str, ...], seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """Planted bits (n, 3) and measured cues (n, 4) of ``seeds`` clips of each class."""
    bits, cues = [], []
    for seed, label in itertools.product(range(seeds), range(8)):
        bits.append(planted_bits(label))
        cues.append(_measured_cues(*_render_clip(np.random.default_rng([seed, label]), label, effects)))
    return np.array(bits), np.array(cues)


def test_every_planted_cue_shows_its_bit():
    bits, cues = _render_many(EFFECTS, seeds=4)
    pitch, side, stripes, bright_side = cues.T
    np.testing.assert_array_equal(pitch, bits[:, 0])
    np.testing.assert_array_equal(stripes, bits[:, 1])
    np.testing.assert_array_equal((bright_side == side).astype(int), bits[:, 2])
    for alone in (side, bright_side):  # each half of the cross cue alone says nothing about b2
        assert {(b, c) for b, c in zip(bits[:, 2], alone)} == {(0, 0), (0, 1), (1, 0), (1, 1)}


@pytest.mark.parametrize("absent", EFFECTS)
def test_an_absent_effect_leaves_its_cue_independent_of_the_label(absent: str):
    effects = tuple(effect for effect in EFFECTS if effect != absent)
    bits, cues = _render_many(effects, seeds=8)
    pitch, side, stripes, bright_side = cues.T
    shown = {"audio": pitch, "video": stripes, "cross": (bright_side == side).astype(int)}
    for index, effect in enumerate(EFFECTS):
        agreement = (shown[effect] == bits[:, index]).mean()
        if effect == absent:  # a fair coin: both values for each bit, agreeing about half the time
            assert {(b, c) for b, c in zip(bits[:, index], shown[effect])} == {(0, 0), (0, 1), (1, 0), (1, 1)}
            assert 0.3 < agreement < 0.7, (effect, agreement)
        else:
            assert agreement == 1.0, effect


def test_ceilings_count_the_bits_each_family_can_read():
    assert planted_ceilings() == {"audio only": 0.25, "video only": 0.25, "additive fusion": 0.5, "interaction": 1.0}
    assert planted_ceilings(["video", "audio"]) == {"audio only": 0.25, "video only": 0.25, "additive fusion": 0.5, "interaction": 0.5}
    assert planted_ceilings(["cross"]) == {"audio only": 0.125, "video only": 0.125, "additive fusion": 0.125, "interaction": 0.25}
    readers = {"audio only": {"audio"}, "video only": {"video"}, "additive fusion": {"audio", "video"}, "interaction": set(EFFECTS)}
    for size in (1, 2, 3):
        for effects in itertools.combinations(EFFECTS, size):
            expected = {family: 2 ** len(reads & set(effects)) / 8 for family, reads in readers.items()}
            assert planted_ceilings(effects) == expected, effects


@pytest.mark.parametrize(
    ("effects", "problem"),
    [([], "none"), (["audo"], "unknown 'audo'"), (["audio", "video", "audio"], "'audio' more than once")],
)
def test_bad_effects_are_refused_with_the_rule_before_anything_is_written(effects: list[str], problem: str, tmp_path: Path):
    with pytest.raises(ValueError, match=f"^{_EFFECTS_RULE} {problem}$"):
        check_effects(effects)
    with pytest.raises(ValueError, match=_EFFECTS_RULE):
        write_synthetic_ravdess(tmp_path / "tree", actors=1, clips_per_actor=1, effects=effects)
    with pytest.raises(ValueError, match=_EFFECTS_RULE):
        planted_ceilings(effects)
    assert not (tmp_path / "tree").exists()
    with pytest.raises(ValueError, match="not the string 'audio'"):
        check_effects("audio")


def test_prepare_carries_the_effects_into_the_manifest(tmp_path: Path):
    raw = write_synthetic_ravdess(tmp_path / "raw", actors=1, clips_per_actor=2, workers=1, seed=3, effects=("video", "audio"))
    prepare_ravdess(raw, tmp_path / "prepared", LITE_PREPROCESS, workers=1)
    manifest = json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert manifest["synthetic"] == json.loads((raw / SYNTHETIC_FILE).read_text())
    assert manifest["synthetic"]["effects"] == ["audio", "video"] and manifest["synthetic"]["seed"] == 3
    assert PreparedDataset(tmp_path / "prepared").planted_effects == ("audio", "video")

    (raw / SYNTHETIC_FILE).unlink()  # a tree without the record reads as a real dataset
    prepare_ravdess(raw, tmp_path / "prepared", LITE_PREPROCESS, workers=1)
    assert "synthetic" not in json.loads((tmp_path / "prepared" / "manifest.json").read_text())
    assert PreparedDataset(tmp_path / "prepared").planted_effects is None

    (raw / SYNTHETIC_FILE).write_text(json.dumps({"effects": ["sound"]}))
    with pytest.raises(DataError, match=f"{SYNTHETIC_FILE}: malformed synthetic record .*unknown 'sound'"):
        prepare_ravdess(raw, tmp_path / "other", LITE_PREPROCESS, workers=1)
    assert not (tmp_path / "other").exists()


def test_cli_synth_prints_the_effects_and_their_ceilings(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "tree"
    args = ["data", "synth", str(out), "--actors", "1", "--clips-per-actor", "1", "--effects", "video, audio"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "planted effects: audio, video"
    rows = [re.fullmatch(r"  (\S.*?) +(\d+\.\d%)  (.+)", line) for line in lines[3:]]
    assert {row[1]: row[2] for row in rows} == {
        "audio only": "25.0%", "video only": "25.0%", "additive fusion": "50.0%", "interaction": "50.0%"
    }
    assert json.loads((out / SYNTHETIC_FILE).read_text())["effects"] == ["audio", "video"]


@pytest.mark.parametrize(
    ("given", "problem"),
    [("", "none"), ("audio,audio", "'audio' more than once"), ("audio,sound", "unknown 'sound'")],
)
def test_cli_synth_refuses_bad_effects_in_one_line(given: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "tree"
    assert main(["data", "synth", str(out), "--actors", "1", "--clips-per-actor", "1", "--effects", given]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"tacfn: error: {_EFFECTS_RULE.replace(chr(92), '')} {problem}\n"
    assert captured.out == "" and not out.exists()


def test_run_config_effects_are_validated_and_name_the_key():
    assert parse_run_config({}, check_model=False).data.synthetic.effects == list(EFFECTS)
    cfg = parse_run_config({"data": {"synthetic": {"effects": ["video", "audio"]}}}, check_model=False)
    assert cfg.data.synthetic.effects == ["audio", "video"]
    for effects, problem in (([], "none"), (["smell"], "unknown 'smell'"), (["cross", "cross"], "'cross' more than once")):
        with pytest.raises(ConfigError, match=f"^run.yaml: data\\.synthetic\\.effects: {_EFFECTS_RULE} {problem}$"):
            parse_run_config({"data": {"synthetic": {"effects": effects}}}, "run.yaml", check_model=False)


def test_the_synthetic_cache_folder_is_keyed_on_non_default_effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The default effects keep the folder name caches were written under; others get their own."""
    written = []

    def write(out: Path, **kwargs: object) -> Path:
        written.append(kwargs["effects"])
        out.mkdir(parents=True)
        return out

    def prepare(raw: Path, out: Path, *args: object, **kwargs: object) -> None:
        out.mkdir(parents=True)
        (out / "manifest.json").write_text("{}")

    monkeypatch.setattr(tasks, "write_synthetic_ravdess", write)
    monkeypatch.setattr(tasks, "prepare_ravdess", prepare)
    for effects, folder in ((EFFECTS, "seed0-actors6-clips8"), (("video", "audio"), "seed0-actors6-clips8-effects-audio-video")):
        synth = parse_run_config({"data": {"synthetic": {"actors": 6, "clips_per_actor": 8, "effects": list(effects)}}}, check_model=False)
        path = tasks.ensure_synthetic_ravdess(synth.data.synthetic, LITE_PREPROCESS, tmp_path)
        assert path == tmp_path / "synthetic" / folder / f"prepared-{LITE_PREPROCESS.key()}"
    assert written == [list(EFFECTS), ["audio", "video"]]
