"""Content digests of dataset files: what a cache derived from a dataset is keyed on.

Two datasets can share clip ids (every RAVDESS tree has the same file names, every
converted IEMOCAP file the same ``train/0``...), so features cached per clip id must also
be keyed on the bytes the clips came from.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK_BYTES = 1 << 22


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
