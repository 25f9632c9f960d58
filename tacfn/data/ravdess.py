"""RAVDESS on disk: file names, the clips the paper uses, and their landmark files.

RAVDESS names every file ``MM-VV-EE-II-SS-RR-AA.mp4`` (two digits each):

- ``MM`` modality: 01 full audio-video, 02 video only, 03 audio only;
- ``VV`` vocal channel: 01 speech, 02 song;
- ``EE`` emotion: 01..08 = :data:`EMOTIONS` (the class label is ``EE - 1``);
- ``II`` intensity: 01 normal, 02 strong;
- ``SS`` statement: 01 "Kids are talking by the door", 02 "Dogs are sitting by the door";
- ``RR`` repetition: 01 or 02;
- ``AA`` actor: 01..24, odd actors male, even actors female.

The files sit in ``Actor_NN`` folders. The paper uses the 1440 full audio-video speech
clips (modality 01, vocal channel 01). Facial landmarks ship separately as one OpenFace
CSV per video with the same stem; :func:`scan_ravdess` finds them anywhere under the root.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

_NAME = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR = re.compile(r"^Actor_(\d{2})$")
_FIELDS = ("modality", "vocal_channel", "emotion", "intensity", "statement", "repetition", "actor")
_RANGES = {
    "modality": (1, 3),
    "vocal_channel": (1, 2),
    "emotion": (1, len(EMOTIONS)),
    "intensity": (1, 2),
    "statement": (1, 2),
    "repetition": (1, 2),
    "actor": (1, 24),
}
FULL_AV = 1
SPEECH = 1


@dataclass(frozen=True)
class RavdessClip:
    """One RAVDESS file, its name fields decoded, and its landmark CSV if one was found."""

    path: Path
    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int
    landmarks: Path | None = None

    @property
    def clip_id(self) -> str:
        """The file stem, e.g. ``01-01-03-02-01-01-12``: unique across RAVDESS."""
        return self.path.stem

    @property
    def label(self) -> int:
        """Class index 0..7 into :data:`EMOTIONS`."""
        return self.emotion - 1

    @property
    def is_male(self) -> bool:
        return self.actor % 2 == 1


@dataclass(frozen=True)
class RavdessScan:
    """What :func:`scan_ravdess` found: usable clips, and every other mp4 or RAVDESS wav with the reason."""

    clips: list[RavdessClip]
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def parse_ravdess_name(path: str | Path) -> RavdessClip:
    """Decode a RAVDESS file name; a malformed name or out-of-range code raises DataError."""
    path = Path(path)
    match = _NAME.match(path.stem)
    if match is None:
        raise DataError(
            f"{path.name}: a RAVDESS name must be seven two-digit fields "
            f"MM-VV-EE-II-SS-RR-AA (e.g. 01-01-03-02-01-01-12.mp4)"
        )
    codes = dict(zip(_FIELDS, (int(group) for group in match.groups())))
    for name, (low, high) in _RANGES.items():
        if not low <= codes[name] <= high:
            raise DataError(
                f"{path.name}: `{low:02d} <= {name} <= {high:02d}` must hold, "
                f"but got {name}={codes[name]:02d}"
            )
    return RavdessClip(path=path, landmarks=None, **codes)  # scan_ravdess finds the landmarks


def scan_ravdess(root: str | Path) -> RavdessScan:
    """Find the full audio-video speech clips under ``root`` and their landmark CSVs.

    Every ``*.mp4`` in an ``Actor_NN`` folder (at any depth, so per-actor archives
    unpacked side by side work) is either selected or rejected with a reason: a
    malformed name, video-only, audio-only, song, an actor field that disagrees with its
    folder, or a duplicate of a clip already seen. RAVDESS-named ``*.wav`` files (its
    audio-only release) are rejected too, and so is either kind outside an ``Actor_NN``
    folder (a misspelled ``Actor_6``, the root): a clip must not vanish unreported. Other
    files are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        raise DataError(f"RAVDESS folder {root} {what}; expected a folder with Actor_01..Actor_24")
    actor_dirs = [
        (int(match.group(1)), path)
        for path in sorted(root.rglob("Actor_*"))
        if (match := _ACTOR_DIR.match(path.name)) and path.is_dir()
    ]
    if not actor_dirs:
        raise DataError(
            f"no Actor_NN folders under {root}; expected RAVDESS's layout "
            f"Actor_01..Actor_24/MM-VV-EE-II-SS-RR-AA.mp4"
        )
    landmarks = _landmark_files(root)
    clips: dict[str, RavdessClip] = {}
    rejected: list[tuple[Path, str]] = []
    for folder_actor, folder in actor_dirs:
        for path in sorted(folder.iterdir()):
            suffix = path.suffix.lower()
            if suffix == ".wav" and _NAME.match(path.stem) and path.is_file():
                rejected.append((path, "audio-only .wav file; TACFN needs full audio-video clips (.mp4, modality 01)"))
                continue
            if suffix != ".mp4" or not path.is_file():
                continue
            try:
                clip = parse_ravdess_name(path)
            except DataError as exc:
                rejected.append((path, str(exc).removeprefix(f"{path.name}: ")))
                continue
            reason = _rejection(clip, folder_actor, clips)
            if reason is not None:
                rejected.append((path, reason))
                continue
            clips[clip.clip_id] = replace(clip, landmarks=landmarks.get(clip.clip_id))
    rejected += _outside_actor_folders(root)
    if not clips:
        detail = ""
        if rejected:
            detail = f"; {len(rejected)} file(s) rejected, e.g. {rejected[0][0].name}: {rejected[0][1]}"
        raise DataError(
            f"no full audio-video speech clip (01-01-*.mp4) in the Actor_NN folders under {root}{detail}"
        )
    ordered = sorted(clips.values(), key=lambda clip: (clip.actor, clip.clip_id))
    return RavdessScan(clips=ordered, rejected=rejected)


def _rejection(clip: RavdessClip, folder_actor: int, seen: dict[str, RavdessClip]) -> str | None:
    """Why ``clip`` is not one of the paper's clips, or None if it is."""
    if clip.modality != FULL_AV:
        kind = "video-only" if clip.modality == 2 else "audio-only"
        return f"{kind} (modality {clip.modality:02d}); TACFN needs full audio-video clips (modality 01)"
    if clip.vocal_channel != SPEECH:
        return "song (vocal channel 02); the paper uses speech clips (vocal channel 01)"
    if clip.actor != folder_actor:
        return f"actor field AA={clip.actor:02d} disagrees with its folder Actor_{folder_actor:02d}"
    if clip.clip_id in seen:
        return f"duplicate of {seen[clip.clip_id].path}"
    return None


def _outside_actor_folders(root: Path) -> list[tuple[Path, str]]:
    """The ``*.mp4`` and RAVDESS-named ``*.wav`` files under ``root`` whose folder is not an
    ``Actor_NN`` folder, each with why it is left out."""
    return [
        (path, f"not inside an Actor_NN folder (it is in {path.parent.name!r}); RAVDESS keeps clips in Actor_01..Actor_24")
        for path in sorted(root.rglob("*"))
        if _is_media(path) and not _ACTOR_DIR.match(path.parent.name)
    ]


def _is_media(path: Path) -> bool:
    """Whether ``path`` is a file :func:`scan_ravdess` reports: any mp4, or a RAVDESS-named wav."""
    suffix = path.suffix.lower()
    return (suffix == ".mp4" or (suffix == ".wav" and _NAME.match(path.stem) is not None)) and path.is_file()


def _landmark_files(root: Path) -> dict[str, Path]:
    """Landmark CSVs under ``root`` by stem; the first in path order wins."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.csv")):
        if _NAME.match(path.stem):
            found.setdefault(path.stem, path)
    return found
