"""Preprocessing settings: how a clip's media become model inputs.

The settings are part of the feature-cache key and of a prepared dataset's manifest, so
two datasets prepared differently can never be mixed by accident.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PreprocessConfig:
    """Frames and MFCCs for one clip.

    Video: ``num_frames`` face crops evenly spaced over the whole clip, each resized to
    ``crop_size`` x ``crop_size`` RGB. Audio: ``duration_s`` seconds from ``offset_s``
    at ``sample_rate`` Hz (mono), ``n_mfcc`` MFCCs with librosa's defaults otherwise
    (``hop_length`` 512, centred frames); clips shorter than that are zero-padded.
    """

    num_frames: int = 30
    crop_size: int = 224
    sample_rate: int = 44_100
    offset_s: float = 0.5
    duration_s: float = 2.45
    n_mfcc: int = 13
    hop_length: int = 512

    def __post_init__(self) -> None:
        for name in ("num_frames", "crop_size", "sample_rate", "n_mfcc", "hop_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name} >= 1` must hold, but got {name}={getattr(self, name)}")
        if self.offset_s < 0 or self.duration_s <= 0:
            raise ValueError(
                f"`offset_s >= 0 and duration_s > 0` must hold, but got "
                f"(offset_s={self.offset_s}, duration_s={self.duration_s})"
            )

    @property
    def num_samples(self) -> int:
        """Audio samples fed to librosa."""
        return int(round(self.duration_s * self.sample_rate))

    @property
    def mfcc_frames(self) -> int:
        """MFCC frames librosa returns for ``num_samples`` (centred): 212 for the paper."""
        return 1 + self.num_samples // self.hop_length

    @property
    def video_shape(self) -> tuple[int, int, int, int]:
        """Model input shape of the video, per sample: (3, T, H, W)."""
        return (3, self.num_frames, self.crop_size, self.crop_size)

    @property
    def audio_shape(self) -> tuple[int, int]:
        """Model input shape of the audio, per sample: (n_mfcc, frames)."""
        return (self.n_mfcc, self.mfcc_frames)

    def key(self) -> str:
        """Stable short hash of the settings (for cache keys and manifests)."""
        payload = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


PAPER_PREPROCESS = PreprocessConfig()
LITE_PREPROCESS = PreprocessConfig(num_frames=8, crop_size=64, sample_rate=22_050)
