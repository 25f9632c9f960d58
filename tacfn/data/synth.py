"""Synthetic RAVDESS: real mp4 files in RAVDESS's naming, with a planted, known signal.

The tree is ``Actor_XX/01-01-EE-II-SS-RR-XX.mp4`` plus, next to each mp4, an OpenFace
landmark CSV with the same stem, so every part of the real pipeline (name parsing, landmark
lookup, PyAV decoding, face cropping, MFCCs) runs on it. Each actor also gets one
video-only twin (``02-01-...``, no audio track) of its first clip, which the reader must
reject.

Each clip is 160x120 H.264 video at 15 fps with a mono 44.1 kHz AAC track, 3.0-3.5 s long.
A "face" square (48-60 px, with 68 landmarks tracking it) sits on a plain background.
The emotion class ``c`` in 0..7 is planted as three bits ``c = b0 + 2*b1 + 4*b2``
(:func:`planted_bits`):

- ``b0``, audio only: the pitch of a steady tone, 300 Hz (b0=0) or 700 Hz (b0=1).
- ``b1``, video only: stripes across the upper face (rows 12-45% of the face height),
  horizontal (b1=0) or vertical (b1=1), period 8 px.
- ``b2``, only in the combination, the way TACFN's audio-conditioned spatial attention
  reads it: the lower face (rows 55-90%) holds a LEFT and a RIGHT patch, one bright and
  one dark, which one is bright chosen at random. A second tone selects a side: 2 kHz =
  left, 4.5 kHz = right, chosen at random. ``b2`` is the brightness of the selected patch
  (1 = bright). Video alone sees which patch is bright but not which side counts; audio
  alone knows the side but not the brightness; each is independent of ``b2``. So a
  video-only model can reach 25% (b1 known, chance 12.5%), an audio-only model 25%
  (b0 known), an additive fusion of the two 50%, a model of their interaction 100%
  (:func:`planted_ceilings`). The two patches always differ: if both could be bright
  (or both dark) the video alone would give ``b2`` away in half the clips.

Redundant noise that carries no label: background colour, face colour, face size and
position, a slow drift of the face, a fixed per-pixel noise pattern of +-12 grey levels
per clip (x264 would quantise fresh noise in every frame away anyway), clip length, tone
frequencies (+-2%), amplitudes and phases, background white noise at a random level, and
a landmark tracking failure (``success`` 0) on the middle frame of every clip.

Everything is drawn from a generator seeded by ``(seed, actor, clip fields)``: the same
seed gives the same decoded frames and samples, whatever the tree size or write order.

Planted nulls: ``effects`` names which of the three :data:`EFFECTS` are planted ("audio"
b0, "video" b1, "cross" b2). An absent effect's cue is a fair coin, independent of the
label: the pitch is 300 or 700 Hz at random, the stripes point either way at random, the
bright patch is left or right regardless of the side tone. Its bit is then unreadable, so
a model that still scores above the ceilings of :func:`planted_ceilings` reads something
it should not (a leak in the pipeline or the splits). The tree records its effects in
``synthetic.json`` at its root, and ``tacfn data prepare`` carries them into the manifest.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import av
import numpy as np
from tqdm.auto import tqdm

from ..errors import ConfigError, DataError
from ..files import write_bytes_atomic
from .ravdess import EMOTIONS

FRAME_WIDTH = 160
FRAME_HEIGHT = 120
FPS = 15
SAMPLE_RATE = 44_100
NUM_LANDMARKS = 68
MAX_ACTORS = 24

_B0_TONE_HZ = (300.0, 700.0)
_SIDE_TONE_HZ = (2000.0, 4500.0)  # left, right
_STRIPE_PERIOD = 8
# Left patches are red, right patches blue, (dark, bright) each: the side is visible in the
# content, so attention can select a patch by what it looks like, as TACFN's fused weight does.
_PATCH_RGB = (((110, 0, 0), (255, 120, 120)), ((0, 0, 110), (120, 120, 255)))
_PIXEL_NOISE = 12

EFFECTS: tuple[str, ...] = ("audio", "video", "cross")
SYNTHETIC_FILE = "synthetic.json"
GENERATOR_VERSION = 1  # raise when the same seed and effects would write other clips


class Family(NamedTuple):
    """A model family by what it can read: the cues within one group jointly, separate
    groups only one by one, their log-posteriors added (late fusion of Bayes-optimal
    classifiers), so never what only the combination of two groups carries."""

    groups: tuple[tuple[str, ...], ...]
    examples: str


_AUDIO_CUES = ("pitch", "side")
_VIDEO_CUES = ("stripes", "bright_side")
FAMILIES: dict[str, Family] = {
    "audio only": Family((_AUDIO_CUES,), "modalities: [audio]"),
    "video only": Family((_VIDEO_CUES,), "modalities: [video]"),
    "additive fusion": Family((_AUDIO_CUES, _VIDEO_CUES), "concat, late_average, late_product"),
    "interaction": Family((_AUDIO_CUES + _VIDEO_CUES,), "e.g. tacfn"),
}


class _Cues(NamedTuple):
    """What one clip shows and sounds like, as planted; every field is 0 or 1."""

    pitch: int  # audio: the steady tone, 300 Hz (0) or 700 Hz (1)
    side: int  # audio: the side tone, 2 kHz = left (0) or 4.5 kHz = right (1)
    stripes: int  # video: horizontal (0) or vertical (1)
    bright_side: int  # video: the bright patch, left (0) or right (1)


def planted_bits(label: int) -> tuple[int, int, int]:
    """The planted bits ``(b0 audio, b1 video, b2 audio x video)`` of class ``label``."""
    if not 0 <= label < len(EMOTIONS):
        raise ValueError(f"`0 <= label < {len(EMOTIONS)}` must hold, but got label={label}")
    return label & 1, (label >> 1) & 1, (label >> 2) & 1


def check_effects(effects: Iterable[str]) -> tuple[str, ...]:
    """``effects`` in :data:`EFFECTS` order; ValueError unless a non-empty subset of them, each named once."""
    if isinstance(effects, str):  # "audio" would otherwise read as five one-letter names
        raise ConfigError(f"`effects` must be a collection of names, not the string {effects!r}")
    given = list(effects)
    unknown = [name for name in given if name not in EFFECTS]
    repeated = sorted({name for name in given if given.count(name) > 1}, key=given.index)
    if not given or unknown or repeated:
        problem = (
            f"unknown {', '.join(map(repr, unknown))}" if unknown
            else f"{', '.join(map(repr, repeated))} more than once" if repeated
            else "none"
        )
        raise ConfigError(
            f"`effects` must be a non-empty subset of {', '.join(EFFECTS)}, each named once, but got {problem}"
        )
    return tuple(name for name in EFFECTS if name in given)


def planted_ceilings(effects: Iterable[str] = EFFECTS) -> dict[str, float]:
    """The best accuracy each of :data:`FAMILIES` can reach on balanced classes of a tree
    planted with ``effects``, counted over every label and coin the generator can draw.

    With every effect: audio only 0.25, video only 0.25, additive fusion 0.5, interaction
    1.0; each effect left out halves the ceiling of every family that could read its bit.
    A prediction tied between classes counts as a fair pick among them.
    """
    table = _cue_table(check_effects(effects))
    return {name: _ceiling(table, family.groups) for name, family in FAMILIES.items()}


def read_synthetic_record(root: str | Path) -> dict[str, Any] | None:
    """The ``synthetic.json`` record at ``root``, or None if ``root`` has none (a real dataset).

    Raises DataError if the file is unreadable or its effects break :func:`check_effects`.
    """
    path = Path(root) / SYNTHETIC_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("a synthetic record must be a JSON object")
        check_effects(record["effects"])
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{path}: malformed synthetic record ({exc!r}); write the tree again") from exc
    return record


def write_synthetic_ravdess(
    out_dir: str | Path,
    *,
    actors: int = 24,
    clips_per_actor: int = 16,
    seed: int = 0,
    effects: Iterable[str] = EFFECTS,
    progress: bool = False,
    workers: int | None = None,
) -> Path:
    """Write a synthetic RAVDESS tree into the empty or new folder ``out_dir``; returns it.

    Emotions are balanced per actor (exactly when ``clips_per_actor`` is a multiple of 8);
    intensity, statement and repetition follow RAVDESS's own combinations (neutral has
    no strong intensity), so at most 60 clips per actor exist, as in RAVDESS. Clips are
    encoded by ``workers`` processes (default: one per CPU); the output does not depend on it.
    ``effects`` (a non-empty subset of :data:`EFFECTS`) are planted, the others left as
    planted nulls; with all of them the clips are those this generator always wrote. The
    settings are recorded in ``synthetic.json`` at the root, written last.
    A failed or interrupted run removes what it wrote, so the folder can be written again.
    """
    if not 1 <= actors <= MAX_ACTORS:
        raise ConfigError(f"`1 <= actors <= {MAX_ACTORS}` must hold, but got actors={actors}")
    if not 1 <= clips_per_actor <= len(_SPEECH_FIELDS):
        raise ConfigError(
            f"`1 <= clips_per_actor <= {len(_SPEECH_FIELDS)}` must hold (RAVDESS's speech clips "
            f"per actor), but got clips_per_actor={clips_per_actor}"
        )
    if seed < 0:  # numpy seeds generators with non-negative integers only
        raise ConfigError(f"`seed >= 0` must hold, but got seed={seed}")
    effects = check_effects(effects)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder; write a synthetic tree into a new or empty folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir} is not empty; write a synthetic tree into a new or empty folder")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"`workers >= 1` must hold, but got workers={workers}")
    created = not out_dir.exists()
    folders = [out_dir / f"Actor_{actor:02d}" for actor in range(1, actors + 1)]
    jobs = [
        # RAVDESS's video-only file is the same recording without sound.
        (folder, seed, actor, fields, i == 0, effects)
        for actor, folder in enumerate(folders, start=1)
        for i, fields in enumerate(_SPEECH_FIELDS[:clips_per_actor])
    ]
    record = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "actors": actors,
        "clips_per_actor": clips_per_actor,
        "effects": list(effects),
    }
    payload = json.dumps(record, indent=1).encode()
    try:
        for folder in folders:
            folder.mkdir(parents=True)
        _synthesise_all(jobs, workers, progress)
        write_bytes_atomic(out_dir / SYNTHETIC_FILE, payload)
    except BaseException:  # a failed or interrupted run leaves no partial tree to trip the next one
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        (out_dir / SYNTHETIC_FILE).unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()
        raise
    return out_dir


def _synthesise_all(jobs: list[tuple], workers: int, progress: bool) -> None:
    """Run :func:`_synthesise_clip` on every job; on an error or interrupt, queued jobs are dropped."""
    with tqdm(total=len(jobs), desc="synthesising", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for job in jobs:
                _synthesise_clip(*job)
                bar.update()
            return
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_synthesise_clip, *job) for job in jobs]
            try:
                for future in as_completed(futures):
                    future.result()
                    bar.update()
            except BaseException:  # stop now, not after every queued clip
                pool.shutdown(cancel_futures=True)
                raise


def _synthesise_clip(
    folder: Path,
    seed: int,
    actor: int,
    fields: tuple[int, int, int, int],
    video_only_twin: bool,
    effects: tuple[str, ...],
) -> None:
    """Render one clip from its own seeded generator and write its files."""
    emotion, intensity, statement, repetition = fields
    rng = np.random.default_rng([seed, actor, emotion, intensity, statement, repetition])
    frames, landmarks, audio = _render_clip(rng, label=emotion - 1, effects=effects)
    stem = f"{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
    _write_clip(folder / f"01-01-{stem}", frames, landmarks, audio)
    if video_only_twin:
        _write_clip(folder / f"02-01-{stem}", frames, landmarks, None)


def _speech_fields() -> list[tuple[int, int, int, int]]:
    """RAVDESS's 60 speech (emotion, intensity, statement, repetition) per actor, emotions
    interleaved so that any prefix is as balanced as possible."""
    per_emotion = []
    for emotion in range(1, len(EMOTIONS) + 1):
        intensities = (1,) if emotion == 1 else (1, 2)
        per_emotion.append(
            [(emotion, i, s, r) for r, s, i in itertools.product((1, 2), (1, 2), intensities)]
        )
    rounds = itertools.zip_longest(*per_emotion)
    return [fields for round_ in rounds for fields in round_ if fields is not None]


_SPEECH_FIELDS = _speech_fields()


def _plant(label: int, effects: Collection[str], side: int, coins: Mapping[str, int]) -> _Cues:
    """The cues of a clip of class ``label``: each effect in ``effects`` shows its bit, each
    absent one its coin (0 or 1, independent of the label). ``side`` is always a coin."""
    b0, b1, b2 = planted_bits(label)
    return _Cues(
        pitch=b0 if "audio" in effects else coins["audio"],
        side=side,
        stripes=b1 if "video" in effects else coins["video"],
        bright_side=(side if b2 else 1 - side) if "cross" in effects else coins["cross"],
    )


def _cue_table(effects: tuple[str, ...]) -> list[tuple[int, _Cues]]:
    """Every (label, cues) the generator can plant under ``effects``, all equally likely."""
    absent = [effect for effect in EFFECTS if effect not in effects]
    return [
        (label, _plant(label, effects, side, dict(zip(absent, coins))))
        for label in range(len(EMOTIONS))
        for side in (0, 1)
        for coins in itertools.product((0, 1), repeat=len(absent))
    ]


def _ceiling(table: list[tuple[int, _Cues]], groups: tuple[tuple[str, ...], ...]) -> float:
    """Expected accuracy of predicting, for each row of ``table``, the class that maximises
    the product over ``groups`` of p(class | that group's cues), ties broken fairly."""
    views = [[tuple(getattr(cues, name) for name in group) for _, cues in table] for group in groups]
    # Counts of (view, class) are p(class | view) up to a factor that is the same for every class.
    counts = [Counter(zip(view, (label for label, _ in table))) for view in views]
    correct = Fraction(0)
    for row, (label, _) in enumerate(table):
        scores = [math.prod(count[view[row], c] for count, view in zip(counts, views)) for c in range(len(EMOTIONS))]
        top = max(scores)
        best = [c for c, score in enumerate(scores) if score == top]
        correct += Fraction(label in best, len(best))
    return float(correct / len(table))


def _render_clip(
    rng: np.random.Generator, label: int, effects: Collection[str] = EFFECTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames uint8 (N, H, W, 3), landmarks float (N, 68, 2), audio float32 (samples,).

    All draws come first, in the order this generator has always made them; then one coin
    per absent effect. So a clip with every effect planted is the clip it always was.
    """
    side = int(rng.integers(2))  # 0: the audio selects the left patch, 1: the right
    duration = float(rng.uniform(3.0, 3.5))
    num_frames = int(round(duration * FPS))
    size = int(rng.integers(48, 61))
    skin = rng.integers(80, 181, size=3)
    x0 = int(rng.integers(6, FRAME_WIDTH - size - 6))
    y0 = int(rng.integers(6, FRAME_HEIGHT - size - 6))
    phase = rng.uniform(0, 2 * np.pi, size=2)
    background = rng.integers(0, 256, size=3, dtype=np.uint8)
    noise = rng.integers(-_PIXEL_NOISE, _PIXEL_NOISE + 1, size=(FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.int16)
    jitter = rng.normal(0, 0.3, size=(num_frames, NUM_LANDMARKS, 2))
    tones, hiss = _draw_audio(rng, int(round(duration * SAMPLE_RATE)))
    coins = {effect: int(rng.integers(2)) for effect in EFFECTS if effect not in effects}
    cues = _plant(label, effects, side, coins)

    face = _draw_face(skin, size, vertical_stripes=bool(cues.stripes), bright_side=cues.bright_side)
    t = np.arange(num_frames) / num_frames
    dx = np.round(3 * np.sin(2 * np.pi * t + phase[0])).astype(int)
    dy = np.round(3 * np.sin(2 * np.pi * t + phase[1])).astype(int)
    frames = np.empty((num_frames, FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
    frames[:] = background
    for i in range(num_frames):
        top, left = y0 + dy[i], x0 + dx[i]
        frames[i, top : top + size, left : left + size] = face
    frames = np.clip(frames + noise, 0, 255).astype(np.uint8)

    template = _landmark_template() * (size - 1)
    offsets = np.stack([x0 + dx, y0 + dy], axis=1)[:, None, :]
    landmarks = template[None] + offsets + jitter
    audio = _render_audio((_B0_TONE_HZ[cues.pitch], _SIDE_TONE_HZ[cues.side]), tones, hiss)
    return frames, landmarks, audio


def _draw_face(skin: np.ndarray, size: int, *, vertical_stripes: bool, bright_side: int) -> np.ndarray:
    """A size x size RGB face: ``skin`` colour, a striped band and two patches."""
    face = np.empty((size, size, 3), np.int16)
    face[:] = skin
    rows = slice(round(0.12 * size), round(0.45 * size))
    cols = slice(round(0.1 * size), round(0.9 * size))
    band = face[rows, cols]
    axis_len = band.shape[1] if vertical_stripes else band.shape[0]
    wave = np.where((np.arange(axis_len) // (_STRIPE_PERIOD // 2)) % 2 == 0, 70, -70)
    band += (wave[None, :, None] if vertical_stripes else wave[:, None, None])
    lower = slice(round(0.55 * size), round(0.9 * size))
    left = slice(round(0.1 * size), round(0.42 * size))
    right = slice(round(0.58 * size), round(0.9 * size))
    face[lower, left] = _PATCH_RGB[0][bright_side == 0]
    face[lower, right] = _PATCH_RGB[1][bright_side == 1]
    return np.clip(face, 0, 255).astype(np.uint8)


def _landmark_template() -> np.ndarray:
    """The 68 iBUG/OpenFace points of a frontal face in the unit square, (68, 2) as (x, y).

    Jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lip 48-59, inner lip 60-67; the
    jaw's ends touch x=0 and x=1, the chin y=1 and the brows' tops y=0, so the landmarks'
    bounding box is the face square.
    """
    s = np.linspace(0, 1, 17)
    jaw = np.stack([0.5 - 0.5 * np.cos(np.pi * s), 0.3 + 0.7 * np.sin(np.pi * s)], axis=1)
    b = np.linspace(0, 1, 5)
    brow_y = 0.08 - 0.08 * np.sin(np.pi * b)
    brows = np.concatenate(
        [np.stack([0.1 + 0.32 * b, brow_y], axis=1), np.stack([0.58 + 0.32 * b, brow_y], axis=1)]
    )
    bridge = np.stack([np.full(4, 0.5), np.linspace(0.25, 0.55, 4)], axis=1)
    nostrils = np.stack([np.linspace(0.4, 0.6, 5), 0.62 + 0.02 * np.sin(np.pi * b)], axis=1)
    return np.concatenate(
        [
            jaw,
            brows,
            bridge,
            nostrils,
            _ellipse(0.28, 0.3, 0.09, 0.04, 6),
            _ellipse(0.72, 0.3, 0.09, 0.04, 6),
            _ellipse(0.5, 0.8, 0.18, 0.07, 12),
            _ellipse(0.5, 0.8, 0.1, 0.03, 8),
        ]
    )


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int) -> np.ndarray:
    angle = np.pi - 2 * np.pi * np.arange(n) / n
    return np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)


def _draw_audio(rng: np.random.Generator, num_samples: int) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """The audio's draws: each tone's frequency factor (+-2%), amplitude and phase, then white
    noise at a random level."""
    tones = [(rng.uniform(0.98, 1.02), rng.uniform(0.1, 0.25), rng.uniform(0, 2 * np.pi)) for _ in range(2)]
    hiss = np.exp(rng.uniform(np.log(0.002), np.log(0.03))) * rng.standard_normal(num_samples)
    return tones, hiss


def _render_audio(
    frequencies: tuple[float, float], tones: list[tuple[float, float, float]], hiss: np.ndarray
) -> np.ndarray:
    """Two steady tones (the pitch and the side cue) over ``hiss``, faded in and out."""
    t = np.arange(hiss.size) / SAMPLE_RATE
    audio = np.zeros_like(t)
    for freq, (factor, amplitude, phase) in zip(frequencies, tones):
        freq *= factor
        audio += amplitude * np.sin(2 * np.pi * freq * t + phase)
    audio += hiss
    fade = min(t.size // 2, int(0.02 * SAMPLE_RATE))
    ramp = np.linspace(0, 1, fade)
    audio[:fade] *= ramp
    audio[t.size - fade :] *= ramp[::-1]
    return audio.astype(np.float32)


def _write_clip(
    stem_path: Path, frames: np.ndarray, landmarks: np.ndarray, audio: np.ndarray | None
) -> None:
    """``stem_path``.mp4 (H.264, plus AAC unless ``audio`` is None) and ``stem_path``.csv."""
    with av.open(str(stem_path.with_suffix(".mp4")), "w", format="mp4") as container:
        # One encoder thread: x264's output then depends on nothing but its input.
        x264 = {"crf": "20", "preset": "veryfast", "threads": "1"}
        video = container.add_stream("libx264", rate=FPS, options=x264)
        video.width, video.height, video.pix_fmt = FRAME_WIDTH, FRAME_HEIGHT, "yuv420p"
        sound = None
        if audio is not None:
            aac = {"aac_coder": "fast"}
            sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono", options=aac)
        for array in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            frame = av.AudioFrame.from_ndarray(audio[None], format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    _write_landmarks(stem_path.with_suffix(".csv"), landmarks)


def _write_landmarks(path: Path, landmarks: np.ndarray) -> None:
    """OpenFace's 2-D landmark columns; the middle frame is a tracking failure (zeros)."""
    failed = len(landmarks) // 2
    header = ["frame", "timestamp", "confidence", "success"]
    header += [f"x_{i}" for i in range(NUM_LANDMARKS)] + [f"y_{i}" for i in range(NUM_LANDMARKS)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for i, points in enumerate(landmarks):
            ok = i != failed
            coords = points.T.reshape(-1) if ok else np.zeros(2 * NUM_LANDMARKS)
            meta = [i + 1, f"{i / FPS:.3f}", "0.98" if ok else "0.00", int(ok)]
            writer.writerow(meta + [f"{v:.3f}" for v in coords])
