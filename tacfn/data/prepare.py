"""``tacfn data prepare``: decode a RAVDESS tree once into a memory-mappable dataset.

Clips are decoded in parallel and written in record batches of about 64 MiB as they
arrive, in the scan's order, so memory stays bounded at the paper's 30 x 224 x 224 size
and the output does not depend on the number of workers. Files go to temporary names
and are renamed at the end, manifest last: a failed run leaves no half dataset behind
as the current one. The layout is described in :mod:`tacfn.data.prepared`.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from tqdm.auto import tqdm

from .. import __version__
from ..errors import DataError, MediaError, brief
from ..files import commit, temp_path
from ..outputs import check_output_folder
from .digest import file_sha256
from .media import ClipArrays, LandmarkFallbackWarning, read_clip
from .prepared import CLIPS_FILE, FORMAT_VERSION, INT_COLUMNS, MANIFEST_FILE, SKIPPED_FILE, clips_schema
from .preprocessing import PreprocessConfig
from .ravdess import RavdessClip, scan_ravdess
from .synth import read_synthetic_record

_BATCH_BYTES = 64 * 2**20
_NAMED_CLIPS = 5  # centre-cropped clips the warning names; the manifest lists them all


@dataclass(frozen=True)
class PrepareReport:
    """What :func:`prepare_ravdess` wrote and what it left out (each file with its reason)."""

    out_dir: Path
    clips_path: Path
    manifest_path: Path
    skipped_path: Path
    prepared: int
    skipped: tuple[tuple[Path, str], ...]
    centre_cropped: tuple[Path, ...]


def prepare_ravdess(
    src_dir: str | Path,
    out_dir: str | Path,
    cfg: PreprocessConfig,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> PrepareReport:
    """Decode every full audio-video speech clip under ``src_dir`` into ``out_dir``.

    Rejected and undecodable files are skipped and listed in the report and in
    ``skipped.json``; clips without usable landmarks are centre-cropped, listed in the
    report and the manifest, and announced by one :class:`LandmarkFallbackWarning`.
    A synthetic tree's ``synthetic.json`` (seed, size, planted effects) is copied into
    the manifest under ``synthetic``.
    ``workers`` processes decode (default: one per CPU; 1 decodes in this process).
    Raises DataError if no clip could be prepared, or, before decoding, if ``out_dir``
    holds a dataset prepared from another source or with other preprocessing.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"`workers >= 1` must hold, but got workers={workers}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder; name a new or existing folder for the dataset")
    _check_apart(src_dir, out_dir)
    check_output_folder(out_dir, "OUT", own="dataset")
    scan = scan_ravdess(src_dir)  # first: a mistyped source must not read as "delete OUT"
    synthetic = read_synthetic_record(src_dir)
    _check_replaceable(out_dir, src_dir, cfg)
    skipped = list(scan.rejected)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    done = False
    final = {name: out_dir / name for name in (CLIPS_FILE, SKIPPED_FILE, MANIFEST_FILE)}
    temp = {name: temp_path(path) for name, path in final.items()}
    try:
        prepared, failed, centre_cropped = _write_clips(temp[CLIPS_FILE], scan.clips, cfg, workers, progress)
        skipped += failed
        if prepared == 0:
            raise DataError(
                f"no clip under {src_dir} could be prepared; {len(failed)} clip(s) failed to decode, "
                f"e.g. {failed[0][0]}: {failed[0][1]}"
            )
        temp[SKIPPED_FILE].write_text(
            json.dumps([{"path": str(path), "reason": reason} for path, reason in skipped], indent=1)
        )
        manifest = {
            "format_version": FORMAT_VERSION,
            "dataset": "ravdess",
            "num_clips": prepared,
            "preprocess": asdict(cfg),
            "preprocess_key": cfg.key(),
            "source": str(src_dir.resolve()),
            "tacfn_version": __version__,
            "centre_cropped": [clip.clip_id for clip in centre_cropped],
            "clips_sha256": file_sha256(temp[CLIPS_FILE]),  # what feature caches key on
        }
        if synthetic is not None:  # which effects the generator planted: what a model can score
            manifest["synthetic"] = synthetic
        temp[MANIFEST_FILE].write_text(json.dumps(manifest, indent=1))
        final[MANIFEST_FILE].unlink(missing_ok=True)  # no manifest: not a dataset, mid-swap
        for name in (CLIPS_FILE, SKIPPED_FILE, MANIFEST_FILE):  # the manifest last: then it is a dataset
            commit(temp[name], final[name])
        done = True
    finally:
        for path in temp.values():
            path.unlink(missing_ok=True)
        if created and not done:  # a failed first run leaves no empty folder behind
            with contextlib.suppress(OSError):
                out_dir.rmdir()
    if centre_cropped:
        names = ", ".join(clip.clip_id for clip in centre_cropped[:_NAMED_CLIPS])
        more = f" and {len(centre_cropped) - _NAMED_CLIPS} more" if len(centre_cropped) > _NAMED_CLIPS else ""
        warnings.warn(
            f"{len(centre_cropped)} of {prepared} clips had no usable facial landmarks and were "
            f"centre-cropped (no face detector is installed): {names}{more}; all are listed under "
            f"centre_cropped in {final[MANIFEST_FILE]}",
            LandmarkFallbackWarning,
            stacklevel=2,
        )
    return PrepareReport(
        out_dir=out_dir,
        clips_path=final[CLIPS_FILE],
        manifest_path=final[MANIFEST_FILE],
        skipped_path=final[SKIPPED_FILE],
        prepared=prepared,
        skipped=tuple(skipped),
        centre_cropped=tuple(clip.path for clip in centre_cropped),
    )


def _check_apart(src_dir: Path, out_dir: Path) -> None:
    """Refuse a dataset folder inside the media, or media inside the dataset folder: the
    dataset's files would be written among the clips (and a refresh would scan its own output)."""
    src, out = src_dir.resolve(), out_dir.resolve()
    if out == src:
        raise DataError(f"OUT {out_dir} is the RAVDESS folder itself; name a folder outside it for the dataset")
    if out.is_relative_to(src):
        raise DataError(f"OUT {out_dir} is inside the RAVDESS folder {src_dir}; name a folder outside it for the dataset")
    if src.is_relative_to(out):
        raise DataError(f"the RAVDESS folder {src_dir} is inside OUT {out_dir}; name a folder outside it for the dataset")


def _check_replaceable(out_dir: Path, src_dir: Path, cfg: PreprocessConfig) -> None:
    """Refuse to overwrite a dataset in ``out_dir`` prepared from another source or with other
    preprocessing: re-preparing the same one is a refresh, anything else would silently
    replace data (and break the feature caches and runs that point at the folder)."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        return
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: unreadable manifest ({' '.join(str(exc).split())}), so {out_dir} may hold another "
            "dataset; choose another OUT or delete it"
        ) from exc
    manifest = manifest if isinstance(manifest, dict) else {}
    old_source, old_key = manifest.get("source"), manifest.get("preprocess_key")
    new_source, new_key = str(src_dir.resolve()), cfg.key()
    if (old_source, old_key) != (new_source, new_key):
        preprocess = manifest.get("preprocess")
        old_settings = preprocess if isinstance(preprocess, dict) else {}
        differ = sorted(name for name, value in asdict(cfg).items() if old_settings.get(name, value) != value)
        detail = ", ".join(f"{name} {old_settings[name]} -> {getattr(cfg, name)}" for name in differ)
        raise DataError(
            f"{out_dir} already holds a dataset prepared from {old_source or 'an unknown source'} with "
            f"preprocessing {old_key or 'unknown'}; this run prepares {new_source} with preprocessing {new_key}"
            f"{f' ({detail})' if detail else ''}: choose another OUT or delete it"
        )


def _write_clips(
    path: Path, clips: Sequence[RavdessClip], cfg: PreprocessConfig, workers: int, progress: bool
) -> tuple[int, list[tuple[Path, str]], list[RavdessClip]]:
    """Decode ``clips`` into the Arrow file ``path``; returns (prepared, skipped, centre-cropped)."""
    schema = clips_schema(cfg)
    row_bytes = schema.field("video").type.list_size + 4 * schema.field("mfcc").type.list_size
    rows_per_batch = max(1, _BATCH_BYTES // row_bytes)
    prepared, skipped, centre_cropped = 0, [], []
    rows: list[tuple[RavdessClip, ClipArrays]] = []
    with (
        pa.OSFile(str(path), "wb") as sink,
        ipc.new_file(sink, schema) as writer,
        tqdm(total=len(clips), desc="preparing", unit="clip", disable=not progress) as bar,
    ):
        for clip, result in zip(clips, _decode_all(clips, cfg, workers)):
            bar.update()
            if result.error is not None:
                skipped.append((clip.path, result.error.removeprefix(f"{clip.path}: ")))
                continue
            assert result.arrays is not None  # a clip decoded without an error has its arrays
            if result.centre_cropped:
                centre_cropped.append(clip)
            rows.append((clip, result.arrays))
            prepared += 1
            if len(rows) == rows_per_batch:
                writer.write_batch(_record_batch(rows, schema))
                rows.clear()
        if rows:
            writer.write_batch(_record_batch(rows, schema))
    return prepared, skipped, centre_cropped


class _Decoded(NamedTuple):
    arrays: ClipArrays | None
    error: str | None
    centre_cropped: bool


def _decode_clip(path: Path, landmarks: Path | None, cfg: PreprocessConfig) -> _Decoded:
    """Decode one clip; a MediaError becomes a skip reason, the crop fallback a flag.

    Any other exception becomes a skip reason too, naming its type: one odd file must not
    end a run of 1440 clips, and the type keeps a bug in tacfn recognisable as one.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LandmarkFallbackWarning)
        try:
            arrays = read_clip(path, landmarks, cfg)
        except MediaError as exc:
            return _Decoded(None, str(exc), False)
        except Exception as exc:  # not a MediaError: a bug, or a file nobody foresaw
            return _Decoded(None, f"{path}: unexpected {type(exc).__name__} while decoding ({brief(exc)})", False)
    for warning in caught:  # anything but the fallback is passed on
        if not issubclass(warning.category, LandmarkFallbackWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    fallback = any(issubclass(warning.category, LandmarkFallbackWarning) for warning in caught)
    return _Decoded(arrays, None, fallback)


def _decode_all(clips: Sequence[RavdessClip], cfg: PreprocessConfig, workers: int) -> Iterator[_Decoded]:
    """Decoded clips in the order of ``clips``, at most ``2 * workers`` in flight."""
    if workers == 1 or len(clips) <= 1:
        for clip in clips:
            yield _decode_clip(clip.path, clip.landmarks, cfg)
        return
    with ProcessPoolExecutor(min(workers, len(clips))) as pool:
        pending: deque = deque()
        for clip in clips:
            pending.append(pool.submit(_decode_clip, clip.path, clip.landmarks, cfg))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _record_batch(rows: list[tuple[RavdessClip, ClipArrays]], schema: pa.Schema) -> pa.RecordBatch:
    """One record batch of ``clips.arrow`` from decoded clips."""
    clips = [clip for clip, _ in rows]
    video = np.stack([arrays.video for _, arrays in rows]).reshape(-1)
    mfcc = np.stack([arrays.mfcc for _, arrays in rows]).reshape(-1)
    columns = [pa.array([clip.clip_id for clip in clips], pa.string())]
    columns += [pa.array([getattr(clip, name) for clip in clips], pa.int8()) for name in INT_COLUMNS]
    columns += [
        pa.FixedSizeListArray.from_arrays(pa.array(video), schema.field("video").type.list_size),
        pa.FixedSizeListArray.from_arrays(pa.array(mfcc), schema.field("mfcc").type.list_size),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
