"""One clip's media -> model inputs: face crops and MFCCs, decoded with PyAV.

Video: ``cfg.num_frames`` frames evenly spaced over the whole clip (the centre of each
of ``num_frames`` equal segments), each cropped to the face's bounding box from that
frame's facial landmarks (made square with a margin of :data:`FACE_MARGIN` per side,
kept inside the image) and resized to ``cfg.crop_size``. A frame whose landmark
tracking failed (``success`` 0, a NaN or infinite point, or a box wholly outside the
image or over twice its size) uses the nearest frame that succeeded. Without
landmarks, or with no tracked frame, the crop is the centre square of the frame, with a
:class:`LandmarkFallbackWarning` (no face detector is installed).

Audio: mono, resampled to ``cfg.sample_rate``, ``cfg.duration_s`` seconds from
``cfg.offset_s``, zero-padded if the clip ends sooner, then ``cfg.n_mfcc`` MFCCs with
librosa's defaults.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import av
import librosa
import numpy as np
from av.video.reformatter import Interpolation

from ..errors import MediaError
from .preprocessing import PreprocessConfig

FACE_MARGIN = 0.1
NUM_LANDMARKS = 68
# Exact, CPU-independent swscale output; one thread, as clips are decoded in parallel.
_TO_RGB = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
_RESIZE = Interpolation.AREA | Interpolation.ACCURATE_RND | Interpolation.BITEXACT
_SWS_THREADS = 1
_MAX_FRAME = 2.0**53  # larger OpenFace frame numbers are garbage, and would not convert to int64


class ClipArrays(NamedTuple):
    """A clip's model inputs before normalisation."""

    video: np.ndarray  # uint8 (T, S, S, 3): RGB face crops
    mfcc: np.ndarray  # float32 (n_mfcc, cfg.mfcc_frames)


class LandmarkFallbackWarning(UserWarning):
    """A clip was centre-cropped because no usable facial landmarks were found."""


def read_clip(path: str | Path, landmarks: str | Path | None, cfg: PreprocessConfig) -> ClipArrays:
    """Decode ``path`` into face crops and MFCCs; a clip that cannot serve raises MediaError.

    ``landmarks`` is the clip's OpenFace CSV (columns ``frame``, ``success``,
    ``x_0..x_67``, ``y_0..y_67`` in the video's pixels), or None for a centre crop.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    boxes = None if landmarks is None else read_face_boxes(landmarks)
    try:
        with av.open(str(path)) as container:
            video, audio, used = _decode(container, path, boxes, cfg)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: unreadable or corrupt media ({exc})") from exc
    mfcc = _mfcc(audio, path, cfg)
    if used is None:
        if landmarks is None:
            reason = "no landmark file"
        elif boxes is None:
            reason = f"no tracked frame in {Path(landmarks).name}"
        else:
            reason = f"no face box in {Path(landmarks).name} fits the video frame"
        warnings.warn(
            f"{path.name}: {reason}; used a centre square crop (no face detector is installed)",
            LandmarkFallbackWarning,
            stacklevel=2,
        )
    return ClipArrays(video=video, mfcc=mfcc)


class FaceBoxes(NamedTuple):
    """Face bounding boxes of the frames where tracking succeeded."""

    frames: np.ndarray  # int64 (K,): 0-based frame index, ascending
    boxes: np.ndarray  # float64 (K, 4): x_min, y_min, x_max, y_max

    def at(self, frame_index: int) -> np.ndarray:
        """The box of ``frame_index``, or of the nearest tracked frame."""
        return self.boxes[np.argmin(np.abs(self.frames - frame_index))]

    def inside(self, width: int, height: int) -> FaceBoxes | None:
        """The boxes a crop of a width x height image can use; None if there is none.

        A box whose size or centre overflows (points such as 1e308), that lies wholly
        outside the image, or that is over twice the image's longer side is garbage, not a
        face: its frame counts as untracked.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            side = np.maximum(self.boxes[:, 2] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 1])
            sums = self.boxes[:, :2] + self.boxes[:, 2:]
            usable = np.isfinite(sums).all(axis=1) & (side <= 2 * max(width, height))
        x_min, y_min, x_max, y_max = self.boxes.T
        usable &= (x_max >= 0) & (x_min <= width) & (y_max >= 0) & (y_min <= height)
        if not usable.any():
            return None
        return FaceBoxes(frames=self.frames[usable], boxes=self.boxes[usable])


def read_face_boxes(csv_path: str | Path) -> FaceBoxes | None:
    """Per-frame landmark bounding boxes from an OpenFace CSV; None if no frame was tracked.

    A frame counts as tracked when its ``success`` is set (if the column exists) and its
    frame number and points are all finite (the number also below 2**53, so it converts to
    an integer), so a NaN never reaches the crop. OpenFace numbers frames from 1; the
    boxes are indexed from 0 like decoded frames.
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open() as handle:
            header = [name.strip() for name in handle.readline().split(",")]
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"{csv_path}: unreadable landmark file ({exc})") from exc
    wanted = ["frame"] + [f"{axis}_{i}" for axis in "xy" for i in range(NUM_LANDMARKS)]
    missing = [name for name in wanted if name not in header]
    if missing:
        raise MediaError(f"{csv_path}: not an OpenFace landmark file, missing columns {missing[:4]}")
    columns = [header.index(name) for name in wanted]
    if "success" in header:
        columns.append(header.index("success"))
    try:
        with warnings.catch_warnings():  # a header without rows: no tracked frame, said below
            warnings.filterwarnings("ignore", "loadtxt: input contained no data", UserWarning)
            table = np.loadtxt(csv_path, delimiter=",", skiprows=1, usecols=columns, ndmin=2)
    except ValueError as exc:
        raise MediaError(f"{csv_path}: malformed landmark file ({exc})") from exc
    if "success" in header:
        table = table[table[:, -1] > 0, :-1]
    table = table[np.isfinite(table).all(axis=1)]  # a NaN or inf point: the frame was not tracked
    table = table[np.abs(table[:, 0]) < _MAX_FRAME]  # nor was a frame number no video reaches
    if len(table) == 0:
        return None
    table = table[np.argsort(table[:, 0], kind="stable")]
    xs = table[:, 1 : 1 + NUM_LANDMARKS]
    ys = table[:, 1 + NUM_LANDMARKS :]
    boxes = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    return FaceBoxes(frames=table[:, 0].astype(np.int64) - 1, boxes=boxes)


def sample_frame_indices(num_available: int, num_frames: int) -> np.ndarray:
    """The centres of ``num_frames`` equal segments of ``num_available`` frames."""
    return (2 * np.arange(num_frames) + 1) * num_available // (2 * num_frames)


def _decode(
    container: av.container.InputContainer, path: Path, boxes: FaceBoxes | None, cfg: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, FaceBoxes | None]:
    """Face crops (T, S, S, 3), mono audio at ``cfg.sample_rate`` and the boxes the crops
    used (None: centre crops), in one demuxing pass.

    The frame count comes from the container; if decoding finds a different count, the
    video is decoded a second time with the true one.
    """
    if not container.streams.video and not container.streams.audio:
        raise MediaError(f"{path}: no audio or video stream; TACFN needs audio and video")
    if not container.streams.video:
        raise MediaError(f"{path}: no video stream (audio-only file); TACFN needs audio and video")
    if not container.streams.audio:
        raise MediaError(f"{path}: no audio stream (video-only file); TACFN needs audio and video")
    video_stream, audio_stream = container.streams.video[0], container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=cfg.sample_rate)
    crops = _FaceCropper(path, boxes, cfg, num_available=video_stream.frames)
    chunks: list[np.ndarray] = []
    for packet in container.demux(video_stream, audio_stream):
        for frame in packet.decode():
            if isinstance(frame, av.VideoFrame):  # from video_stream: only it and audio_stream are demuxed
                crops.add(frame)
            elif isinstance(frame, av.AudioFrame):
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
    if crops.seen != crops.num_available and crops.seen >= cfg.num_frames:
        container.seek(0)
        crops = _FaceCropper(path, boxes, cfg, num_available=crops.seen)
        for frame in container.decode(video_stream):
            crops.add(frame)
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return crops.result(), audio, crops.boxes


class _FaceCropper:
    """Keeps the face crops of the frames to sample as decoded frames stream past."""

    def __init__(self, path: Path, boxes: FaceBoxes | None, cfg: PreprocessConfig, num_available: int):
        self.path, self.boxes, self.cfg = path, boxes, cfg
        self.num_available = num_available
        self.seen = 0
        self.slots: dict[int, int] = {}  # frame index -> position in the clip
        if num_available >= cfg.num_frames:  # else unknown (0) or too few: nothing to keep
            wanted = sample_frame_indices(num_available, cfg.num_frames)
            self.slots = {int(index): slot for slot, index in enumerate(wanted)}
        self.video = np.zeros((cfg.num_frames, cfg.crop_size, cfg.crop_size, 3), np.uint8)

    def add(self, frame: av.VideoFrame) -> None:
        if self.seen == 0 and self.boxes is not None:  # the image size is known from here on
            self.boxes = self.boxes.inside(frame.width, frame.height)
        slot = self.slots.get(self.seen)
        if slot is not None:
            image = frame.to_ndarray(format="rgb24", interpolation=_TO_RGB, threads=_SWS_THREADS)
            box = None if self.boxes is None else self.boxes.at(self.seen)
            left, top, side = square_crop(box, width=image.shape[1], height=image.shape[0])
            self.video[slot] = _resize(image[top : top + side, left : left + side], self.cfg.crop_size)
        self.seen += 1

    def result(self) -> np.ndarray:
        if self.seen < self.cfg.num_frames:
            raise MediaError(
                f"{self.path}: only {self.seen} decodable video frames, "
                f"but num_frames={self.cfg.num_frames} are needed"
            )
        return self.video


def square_crop(box: np.ndarray | None, *, width: int, height: int) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square crop around ``box`` inside a width x height image.

    The square's side is the box's longer side plus :data:`FACE_MARGIN` of it on each
    side, at most the image's shorter side; it is centred on the box, then shifted to
    lie inside the image. ``box`` None gives the centre square.
    """
    limit = min(width, height)
    if box is None:
        return (width - limit) // 2, (height - limit) // 2, limit
    x_min, y_min, x_max, y_max = (float(v) for v in box)
    side = int(round(max(x_max - x_min, y_max - y_min) * (1 + 2 * FACE_MARGIN)))
    side = min(max(side, 1), limit)
    left = int(round((x_min + x_max - side) / 2))
    top = int(round((y_min + y_max - side) / 2))
    return min(max(left, 0), width - side), min(max(top, 0), height - side), side


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB uint8 image to size x size with swscale's area filter."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    resized = frame.reformat(width=size, height=size, interpolation=_RESIZE, threads=_SWS_THREADS)
    return resized.to_ndarray()


def _mfcc(audio: np.ndarray, path: Path, cfg: PreprocessConfig) -> np.ndarray:
    """MFCCs of the ``cfg.duration_s`` window from ``cfg.offset_s``, zero-padded."""
    start = int(round(cfg.offset_s * cfg.sample_rate))
    if audio.size <= start:
        raise MediaError(
            f"{path}: audio too short ({audio.size / cfg.sample_rate:.2f} s); "
            f"it must be longer than offset_s={cfg.offset_s} s"
        )
    window = np.zeros(cfg.num_samples, np.float32)
    segment = audio[start : start + cfg.num_samples]
    window[: segment.size] = segment
    mfcc = librosa.feature.mfcc(y=window, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, hop_length=cfg.hop_length)
    return mfcc.astype(np.float32)
