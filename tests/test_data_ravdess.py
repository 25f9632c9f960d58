"""The RAVDESS pipeline on real files: synthetic tree -> scan -> decode -> prepare -> batches."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch

from tacfn.cli import main
from tacfn.data import prepare as prepare_module
from tacfn.data import synth as synth_module
from tacfn.data.media import (
    LandmarkFallbackWarning,
    read_clip,
    read_face_boxes,
    sample_frame_indices,
    square_crop,
)
from tacfn.data.prepare import prepare_ravdess
from tacfn.data.prepared import PreparedDataset
from tacfn.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, LITE_PREPROCESS
from tacfn.data.ravdess import EMOTIONS, parse_ravdess_name, scan_ravdess
from tacfn.data.synth import planted_bits, write_synthetic_ravdess
from tacfn.errors import DataError, MediaError

FIRST_CLIP = "Actor_01/01-01-01-01-01-01-01.mp4"  # every synthetic actor's first clip has a video-only twin
FIRST_TWIN = "Actor_01/02-01-01-01-01-01-01.mp4"


def _copy_actors(src: Path, dst: Path, actors: list[int]) -> Path:
    for actor in actors:
        shutil.copytree(src / f"Actor_{actor:02d}", dst / f"Actor_{actor:02d}")
    return dst


def _arrow(prepared: Path) -> pa.Table:
    with pa.memory_map(str(prepared / "clips.arrow")) as source:
        return ipc.open_file(source).read_all()


def _decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every RGB frame and every audio sample of an mp4."""
    with av.open(str(path)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
        container.seek(0)
        audio = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)])
    return frames, audio


# --- names and scanning -----------------------------------------------------------------


def test_parse_ravdess_name_decodes_every_field():
    clip = parse_ravdess_name("Actor_12/01-01-03-02-01-02-12.mp4")
    fields = (clip.modality, clip.vocal_channel, clip.emotion, clip.intensity, clip.statement, clip.repetition)
    assert fields == (1, 1, 3, 2, 1, 2)
    assert (clip.actor, clip.clip_id, EMOTIONS[clip.label]) == (12, "01-01-03-02-01-02-12", "happy")
    assert not clip.is_male and parse_ravdess_name("01-01-08-01-01-01-07.mp4").is_male


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("01-01-03-02-01-02.mp4", "seven two-digit fields"),
        ("1-01-03-02-01-02-12.mp4", "seven two-digit fields"),
        ("notes.mp4", "seven two-digit fields"),
        ("01-01-09-02-01-02-12.mp4", "emotion <= 08"),
        ("01-01-03-02-01-02-25.mp4", "actor <= 24"),
        ("04-01-03-02-01-02-12.mp4", "modality <= 03"),
        ("01-01-03-00-01-02-12.mp4", "01 <= intensity"),
    ],
)
def test_malformed_names_raise_with_the_rule(name: str, rule: str):
    with pytest.raises(DataError, match=rule) as info:
        parse_ravdess_name(name)
    assert name in str(info.value)


def test_scan_finds_clips_and_landmarks_and_rejects_video_only(synthetic_ravdess: Path):
    scan = scan_ravdess(synthetic_ravdess)
    assert len(scan.clips) == 6 * 8
    assert all(clip.modality == 1 and clip.vocal_channel == 1 for clip in scan.clips)
    assert all(clip.landmarks is not None and clip.landmarks.stem == clip.clip_id for clip in scan.clips)
    for actor in range(1, 7):  # balanced: one clip per emotion per actor
        assert sorted(clip.label for clip in scan.clips if clip.actor == actor) == list(range(8))
    assert len(scan.rejected) == 6
    for path, reason in scan.rejected:
        assert path.name.startswith("02-01-") and "video-only" in reason


def test_scan_rejects_each_bad_file_with_its_reason(synthetic_ravdess: Path, tmp_path: Path):
    root = _copy_actors(synthetic_ravdess, tmp_path / "ravdess", [1])
    folder = root / "Actor_01"
    source = folder / "01-01-02-01-01-01-01.mp4"
    shutil.copy(source, folder / "01-02-02-01-01-01-01.mp4")  # song
    shutil.copy(source, folder / "01-01-02-01-01-01-02.mp4")  # actor 02 in Actor_01
    shutil.copy(source, folder / "01-01-02-01-01.mp4")  # malformed
    (folder / "README.txt").write_text("not a clip")
    (root / "Landmarks").mkdir()  # landmarks shipped in a folder of their own
    for csv in folder.glob("*.csv"):
        csv.rename(root / "Landmarks" / csv.name)

    scan = scan_ravdess(root)
    reasons = {path.name: reason for path, reason in scan.rejected}
    assert set(reasons) == {
        "01-02-02-01-01-01-01.mp4",
        "01-01-02-01-01-01-02.mp4",
        "01-01-02-01-01.mp4",
        "02-01-01-01-01-01-01.mp4",
    }
    assert "song" in reasons["01-02-02-01-01-01-01.mp4"]
    assert "disagrees with its folder Actor_01" in reasons["01-01-02-01-01-01-02.mp4"]
    assert "seven two-digit fields" in reasons["01-01-02-01-01.mp4"]
    assert len(scan.clips) == 8
    assert all(clip.landmarks == root / "Landmarks" / f"{clip.clip_id}.csv" for clip in scan.clips)


def test_scan_lists_ravdess_wav_files_as_skipped(synthetic_ravdess: Path, tmp_path: Path):
    """RAVDESS's audio-only release (03-*.wav) unpacked alongside is reported, not silently dropped."""
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    wav = src / "Actor_01/03-01-01-01-01-01-01.wav"
    wav.write_bytes(b"RIFF")
    (src / "Actor_01/notes.wav").write_bytes(b"RIFF")  # not a RAVDESS name: ignored like any other file
    scan = scan_ravdess(src)
    reasons = dict(scan.rejected)
    assert reasons[wav] == "audio-only .wav file; TACFN needs full audio-video clips (.mp4, modality 01)"
    assert sorted(path.suffix for path in reasons) == [".mp4", ".wav"]


def test_scan_errors_name_the_folder(synthetic_ravdess: Path, tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        scan_ravdess(tmp_path / "missing")
    with pytest.raises(DataError, match=f"no Actor_NN folders under {tmp_path}"):
        scan_ravdess(tmp_path)
    (tmp_path / "Actor_03").mkdir()
    shutil.copy(synthetic_ravdess / FIRST_TWIN, tmp_path / "Actor_03" / "02-01-01-01-01-01-03.mp4")
    with pytest.raises(DataError, match="no full audio-video speech clip .* 1 file.* rejected"):
        scan_ravdess(tmp_path)


# --- synthesis --------------------------------------------------------------------------


def test_planted_bits_compose_the_label():
    assert [b0 + 2 * b1 + 4 * b2 for b0, b1, b2 in map(planted_bits, range(8))] == list(range(8))
    with pytest.raises(ValueError, match="0 <= label < 8"):
        planted_bits(8)


def test_synthesis_is_deterministic_per_seed(tmp_path: Path):
    trees = [
        write_synthetic_ravdess(tmp_path / name, actors=1, clips_per_actor=2, seed=seed, workers=workers)
        for name, seed, workers in (("a", 3, 1), ("b", 3, 2), ("c", 4, 1))
    ]
    names = sorted(path.relative_to(trees[0]) for path in trees[0].rglob("*.mp4"))
    assert len(names) == 3  # 2 clips and the video-only twin of the first
    assert names == sorted(path.relative_to(trees[1]) for path in trees[1].rglob("*.mp4"))
    for name in (name for name in names if name.name.startswith("01-")):
        frames_a, audio_a = _decode(trees[0] / name)
        frames_b, audio_b = _decode(trees[1] / name)
        frames_c, _ = _decode(trees[2] / name)
        np.testing.assert_array_equal(frames_a, frames_b)
        np.testing.assert_array_equal(audio_a, audio_b)
        csv_a, csv_b = ((tree / name).with_suffix(".csv").read_text() for tree in trees[:2])
        assert csv_a == csv_b
        assert frames_a.shape != frames_c.shape or not np.array_equal(frames_a, frames_c)


def test_synthetic_clips_are_h264_and_aac_at_44k(synthetic_ravdess: Path):
    with av.open(str(synthetic_ravdess / FIRST_CLIP)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("h264", "aac")
        assert audio.sample_rate == 44_100
        assert video.frames >= 45
    with av.open(str(synthetic_ravdess / FIRST_TWIN)) as container:
        assert not container.streams.audio


def test_synthesis_rejects_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="1 <= actors <= 24"):
        write_synthetic_ravdess(tmp_path / "a", actors=25)
    with pytest.raises(ValueError, match="clips_per_actor <= 60"):
        write_synthetic_ravdess(tmp_path / "b", clips_per_actor=61)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        write_synthetic_ravdess(tmp_path / "c", actors=1, clips_per_actor=1)


def test_synthesis_rejects_a_negative_seed_before_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "sx"
    assert main(["data", "synth", str(out), "--actors", "6", "--clips-per-actor", "2", "--seed", "-5"]) == 2
    assert capsys.readouterr().err == "tacfn: error: `seed >= 0` must hold, but got seed=-5\n"
    assert not out.exists()


def test_failed_synthesis_leaves_the_folder_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An interrupted run removes its partial tree, so writing it again works."""
    calls = []

    def interrupted(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args)

    real = synth_module._synthesise_clip
    monkeypatch.setattr(synth_module, "_synthesise_clip", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_ravdess(tmp_path / "new", actors=2, clips_per_actor=2, workers=1)
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_ravdess(tmp_path / "empty", actors=2, clips_per_actor=2, workers=1)
    assert list((tmp_path / "empty").iterdir()) == []
    monkeypatch.setattr(synth_module, "_synthesise_clip", real)
    write_synthetic_ravdess(tmp_path / "empty", actors=1, clips_per_actor=1, workers=1)
    assert len(list((tmp_path / "empty" / "Actor_01").glob("*.mp4"))) == 2


@pytest.mark.parametrize("command", ["synth", "prepare"])
def test_output_path_that_is_a_file_is_refused_before_any_work(
    command: str, synthetic_ravdess: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    argv = ["data", "synth", str(afile)] if command == "synth" else ["data", "prepare", str(synthetic_ravdess), str(afile)]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"tacfn: error: {afile} exists and is not a folder; " + (
        "write a synthetic tree into a new or empty folder\n" if command == "synth"
        else "name a new or existing folder for the dataset\n"
    )
    assert afile.read_text() == "keep me\n" and sorted(tmp_path.iterdir()) == [afile]


def test_planted_signal_is_recoverable(prepared_lite: Path, synthetic_ravdess: Path):
    """b0 and the side cue in the MFCCs, b1 in the stripes, b2 = brightness of the patch the
    audio selects; the patch brightness alone does not give b2."""
    table = _arrow(prepared_lite)
    labels = table.column("label").to_numpy()
    bits = np.array([planted_bits(int(label)) for label in labels])
    video = table.column("video").combine_chunks().flatten().to_numpy().reshape(len(labels), 8, 64, 64, 3)
    grey = video.astype(np.float64).mean(-1)
    mfcc = table.column("mfcc").combine_chunks().flatten().to_numpy().reshape(len(labels), 13, 106)

    def region(top: float, bottom: float, left: float, right: float) -> np.ndarray:
        # The face square spans the crop minus a 10% margin on each side.
        margin, face = 64 * 0.1 / 1.2, 64 / 1.2
        rows = slice(int(margin + top * face), int(margin + bottom * face))
        cols = slice(int(margin + left * face), int(margin + right * face))
        return grey[:, :, rows, cols]

    stripes = region(0.15, 0.42, 0.15, 0.85)
    along_x, along_y = (np.abs(np.diff(stripes, axis=axis)).mean((1, 2, 3)) for axis in (3, 2))
    np.testing.assert_array_equal((along_x > along_y).astype(int), bits[:, 1])  # vertical stripes

    left, right = region(0.6, 0.85, 0.15, 0.38).mean((1, 2, 3)), region(0.6, 0.85, 0.62, 0.85).mean((1, 2, 3))
    assert np.all(np.abs(left - right) > 100)  # one patch bright, one dark
    bright_side = (right > left).astype(int)

    def audio_side(clip_id: str, actor: int) -> int:
        _, audio = _decode(synthetic_ravdess / f"Actor_{actor:02d}" / f"{clip_id}.mp4")
        spectrum, freqs = np.abs(np.fft.rfft(audio)), np.fft.rfftfreq(audio.size, 1 / 44_100)
        high, low = spectrum[(freqs > 4000) & (freqs < 5000)].sum(), spectrum[(freqs > 1800) & (freqs < 2200)].sum()
        return int(high > low)

    clips = zip(table.column("clip_id").to_pylist(), table.column("actor").to_numpy())
    side = np.array([audio_side(clip_id, actor) for clip_id, actor in clips])
    np.testing.assert_array_equal((bright_side == side).astype(int), bits[:, 2])
    assert {(b, s) for b, s in zip(bits[:, 2], bright_side)} == {(0, 0), (0, 1), (1, 0), (1, 1)}

    mean_mfcc = mfcc.mean(-1)
    mean_mfcc = (mean_mfcc - mean_mfcc.mean(0)) / mean_mfcc.std(0)  # c0 (loudness) would dominate
    for target in (bits[:, 0], side):  # both tones survive 13 MFCCs: nearest centroid is exact
        centroids = [mean_mfcc[target == value].mean(0) for value in (0, 1)]
        distance = [np.linalg.norm(mean_mfcc - centroid, axis=1) for centroid in centroids]
        np.testing.assert_array_equal((distance[1] < distance[0]).astype(int), target)


# --- decoding one clip ------------------------------------------------------------------


def test_sample_frame_indices_are_evenly_spaced_over_the_clip():
    for available, wanted in ((45, 8), (45, 30), (30, 30), (100, 7)):
        idx = sample_frame_indices(available, wanted)
        assert len(idx) == wanted and np.all(np.diff(idx) > 0)
        assert idx[0] < available / wanted and idx[-1] >= available - available / wanted


def test_square_crop_adds_margin_and_stays_inside_the_image():
    assert square_crop(np.array([10, 20, 50, 60]), width=160, height=120) == (6, 16, 48)
    left, top, side = square_crop(np.array([135, 89, 159, 119]), width=160, height=120)
    assert (left + side, top + side) == (160, 120) and side == round(30 * 1.2)
    assert square_crop(np.array([-50, -50, 400, 300]), width=160, height=120)[2] == 120
    assert square_crop(None, width=160, height=120) == (20, 0, 120)


def test_landmark_boxes_skip_failed_frames(synthetic_ravdess: Path):
    csv = (synthetic_ravdess / FIRST_CLIP).with_suffix(".csv")
    rows = np.loadtxt(csv, delimiter=",", skiprows=1)
    failed = int(rows[rows[:, 3] == 0, 0][0]) - 1  # OpenFace frames count from 1
    boxes = read_face_boxes(csv)
    assert boxes is not None and failed not in boxes.frames and len(boxes.frames) == len(rows) - 1
    np.testing.assert_array_equal(boxes.at(failed), boxes.boxes[np.searchsorted(boxes.frames, failed) - 1])
    x_min, y_min, x_max, y_max = boxes.at(0)
    assert 40 < x_max - x_min < 64 and 40 < y_max - y_min < 64  # the synthetic face is 48-60 px


def test_read_clip_crops_faces_and_falls_back_to_centre_crop_with_warning(synthetic_ravdess: Path):
    path = synthetic_ravdess / FIRST_CLIP
    faces = read_clip(path, path.with_suffix(".csv"), LITE_PREPROCESS)
    assert faces.video.shape == (8, 64, 64, 3) and faces.video.dtype == np.uint8
    assert faces.mfcc.shape == LITE_PREPROCESS.audio_shape and faces.mfcc.dtype == np.float32
    with pytest.warns(LandmarkFallbackWarning, match="centre square crop"):
        centre = read_clip(path, None, LITE_PREPROCESS)
    np.testing.assert_array_equal(centre.mfcc, faces.mfcc)
    # The face square fills most of a landmark crop but under half of the 120 px centre crop.
    def detail(video: np.ndarray) -> float:
        return np.abs(np.diff(video[:, 10:54, 10:54].astype(float), axis=1)).mean()

    assert detail(faces.video) > detail(centre.video)


def test_read_clip_errors_name_the_file_and_the_reason(synthetic_ravdess: Path, tmp_path: Path):
    good = synthetic_ravdess / FIRST_CLIP
    empty = tmp_path / "empty.mp4"
    empty.touch()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:300])
    audio_only = tmp_path / "audio_only.mp4"
    with av.open(str(audio_only), "w") as container:
        stream = container.add_stream("aac", rate=44_100, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 44_100), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 44_100
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    bad_csv = tmp_path / "landmarks.csv"
    bad_csv.write_text("frame, timestamp\n1, 0.0\n")
    lite = LITE_PREPROCESS
    cases = [
        (tmp_path / "missing.mp4", None, lite, "file not found"),
        (empty, None, lite, r"empty file \(0 bytes\)"),
        (truncated, None, lite, "unreadable or corrupt"),
        (synthetic_ravdess / FIRST_TWIN, None, lite, "no audio stream"),
        (audio_only, None, lite, "no video stream"),
        (good, None, replace(lite, num_frames=200), "only 4[5-9] decodable video frames"),
        (good, None, replace(lite, offset_s=10.0), "audio too short"),
        (good, bad_csv, lite, "not an OpenFace landmark file"),
    ]
    for path, landmarks, cfg, reason in cases:
        with pytest.raises(MediaError, match=reason) as info:
            read_clip(path, landmarks, cfg)
        assert str(landmarks or path) in str(info.value)


def test_container_without_frame_count_decodes_the_same(synthetic_ravdess: Path, tmp_path: Path):
    """Matroska stores no frame count: the frames are counted, then decoded again."""
    src = synthetic_ravdess / FIRST_CLIP
    mkv = tmp_path / "clip.mkv"
    with av.open(str(src)) as source, av.open(str(mkv), "w") as remuxed:
        streams = {stream.index: remuxed.add_stream_from_template(stream) for stream in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                remuxed.mux(packet)
    with av.open(str(mkv)) as container:
        assert container.streams.video[0].frames == 0
    expected = read_clip(src, src.with_suffix(".csv"), LITE_PREPROCESS)
    actual = read_clip(mkv, src.with_suffix(".csv"), LITE_PREPROCESS)
    np.testing.assert_array_equal(actual.video, expected.video)
    np.testing.assert_array_equal(actual.mfcc, expected.mfcc)


# --- preparation and the prepared dataset ----------------------------------------------


def test_a_dataset_prepared_before_the_digest_was_recorded_is_hashed_on_load(prepared_lite: Path, tmp_path: Path):
    old = tmp_path / "old"
    shutil.copytree(prepared_lite, old)
    manifest = json.loads((old / "manifest.json").read_text())
    recorded = manifest.pop("clips_sha256")
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert PreparedDataset(old).content_digest == recorded


def test_prepare_writes_arrow_manifest_and_skipped(prepared_lite: Path, synthetic_ravdess: Path):
    cfg = LITE_PREPROCESS
    manifest = json.loads((prepared_lite / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["num_clips"] == 48
    assert manifest["preprocess"] == asdict(cfg) and manifest["preprocess_key"] == cfg.key()
    assert manifest["source"] == str(synthetic_ravdess.resolve())
    assert manifest["clips_sha256"] == hashlib.sha256((prepared_lite / "clips.arrow").read_bytes()).hexdigest()
    assert PreparedDataset(prepared_lite).content_digest == manifest["clips_sha256"]

    table = _arrow(prepared_lite)
    schema = table.schema
    assert schema.field("video").type == pa.list_(pa.uint8(), 8 * 64 * 64 * 3)
    assert schema.field("mfcc").type == pa.list_(pa.float32(), 13 * 106)
    assert all(schema.field(name).type == pa.int8() for name in ("actor", "emotion", "label", "intensity"))
    scan = scan_ravdess(synthetic_ravdess)
    assert table.column("clip_id").to_pylist() == [clip.clip_id for clip in scan.clips]
    np.testing.assert_array_equal(table.column("label").to_numpy(), [clip.label for clip in scan.clips])

    skipped = json.loads((prepared_lite / "skipped.json").read_text())
    assert sorted(Path(entry["path"]).name for entry in skipped) == sorted(p.name for p, _ in scan.rejected)
    assert all("video-only" in entry["reason"] for entry in skipped)
    assert not list(prepared_lite.glob(".*.tmp"))


def test_batch_is_normalised_and_equals_getitem(prepared_lite: Path):
    ds = PreparedDataset(prepared_lite)
    cfg = ds.preprocess
    assert cfg == LITE_PREPROCESS and len(ds) == 48 and len(ds.clip_ids) == 48
    assert ds.labels.dtype == np.int64 and ds.actors.dtype == np.int64
    idx = np.array([47, 3, 3, 20, 0])
    batch = ds.batch(idx)
    assert batch["video"].shape == (5, 3, 8, 64, 64) and batch["video"].dtype == torch.float32
    assert batch["video"].is_contiguous()
    assert batch["audio"].shape == (5, 13, 106) and batch["audio"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["index"].tolist() == idx.tolist()
    np.testing.assert_array_equal(batch["label"].numpy(), ds.labels[idx])

    table = _arrow(prepared_lite)
    raw = np.stack([table.column("video")[int(i)].values.to_numpy() for i in idx]).reshape(5, 8, 64, 64, 3)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    pixels = (batch["video"] * std + mean) * 255
    torch.testing.assert_close(pixels, torch.from_numpy(raw).permute(0, 4, 1, 2, 3).float(), atol=1e-3, rtol=0)
    raw_mfcc = np.stack([table.column("mfcc")[int(i)].values.to_numpy() for i in idx]).reshape(5, 13, 106)
    np.testing.assert_array_equal(batch["audio"].numpy(), raw_mfcc)

    for row, i in enumerate(idx):
        item = ds[int(i)]
        assert torch.equal(item["video"], batch["video"][row]) and torch.equal(item["audio"], batch["audio"][row])
        assert item["label"].item() == ds.labels[i] and item["index"].item() == i
        assert item["clip_id"] == ds.clip_ids[i] and item["actor"] == ds.actors[i]
    assert ds[-1]["clip_id"] == ds.clip_ids[47]
    with pytest.raises(IndexError, match="0 <= index < 48"):
        ds.batch([0, 48])
    with pytest.raises(IndexError):
        ds[48]

    again = pickle.loads(pickle.dumps(ds))
    assert torch.equal(again.batch(idx)["video"], batch["video"])


def test_subset_selects_rows_by_actor(prepared_lite: Path):
    ds = PreparedDataset(prepared_lite)
    rows = ds.subset([2, 5])
    assert len(rows) == 16 and set(ds.actors[rows].tolist()) == {2, 5}
    assert np.all(np.diff(rows) > 0)
    with pytest.raises(ValueError, match=r"actors \[9\] are not in this dataset"):
        ds.subset([1, 9])


def test_prepare_skips_bad_files_and_output_is_independent_of_workers_and_batching(
    synthetic_ravdess: Path, prepared_lite: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1, 2])
    good = src / FIRST_CLIP
    bad = {
        src / "Actor_01/01-01-03-01-02-01-01.mp4": "unreadable or corrupt",
        src / "Actor_01/01-01-04-01-02-01-01.mp4": "empty file",
        src / "Actor_02/01-01-05-01-02-01-02.mp4": "no audio stream",
    }
    files = list(bad)
    files[0].write_bytes(good.read_bytes()[:300])
    files[1].touch()
    shutil.copy(src / "Actor_02/02-01-01-01-01-01-02.mp4", files[2])
    no_landmarks = src / "Actor_02/01-01-07-01-01-01-02.mp4"
    no_landmarks.with_suffix(".csv").unlink()
    video_size = 8 * 64 * 64 * 3 + 4 * 13 * 106
    monkeypatch.setattr(prepare_module, "_BATCH_BYTES", 3 * video_size)  # 3 rows per record batch

    with pytest.warns(LandmarkFallbackWarning) as caught:
        report = prepare_ravdess(src, tmp_path / "out", LITE_PREPROCESS, workers=1)
    assert [str(w.message) for w in caught] == [
        f"1 of 16 clips had no usable facial landmarks and were centre-cropped (no face detector is installed): "
        f"{no_landmarks.stem}; all are listed under centre_cropped in {tmp_path / 'out' / 'manifest.json'}"
    ]
    assert report.prepared == 16 and report.centre_cropped == (no_landmarks,)
    reasons = dict(report.skipped)
    for path, reason in bad.items():
        assert reason in reasons[path]
    assert {path.name[:6] for path in reasons if path not in bad} == {"02-01-"}
    skipped_json = json.loads(report.skipped_path.read_text())
    assert {entry["path"]: entry["reason"] for entry in skipped_json} == {str(p): r for p, r in report.skipped}

    assert ipc.open_file(pa.memory_map(str(report.clips_path))).num_record_batches == 6
    ds, reference = PreparedDataset(tmp_path / "out"), PreparedDataset(prepared_lite)
    same_rows = np.array([reference.clip_ids.index(clip_id) for clip_id in ds.clip_ids])
    order = np.random.default_rng(0).permutation(len(ds))
    ours, theirs = ds.batch(order), reference.batch(same_rows[order])
    assert torch.equal(ours["audio"], theirs["audio"]) and torch.equal(ours["label"], theirs["label"])
    cropped = ds.clip_ids.index(no_landmarks.stem)
    for row, i in enumerate(order):
        assert torch.equal(ours["video"][row], theirs["video"][row]) == (i != cropped)


def _rewrite_landmarks(csv: Path, rows: slice | list[int], column: str, value: str) -> None:
    """Set ``column`` to ``value`` in the given data rows of an OpenFace CSV."""
    header, *lines = csv.read_text().splitlines()
    col = header.split(",").index(column)
    for i in range(len(lines))[rows] if isinstance(rows, slice) else rows:
        cells = lines[i].split(",")
        cells[col] = value
        lines[i] = ",".join(cells)
    csv.write_text("\n".join([header, *lines]) + "\n")


def test_non_finite_landmarks_count_as_untracked_frames(synthetic_ravdess: Path, tmp_path: Path):
    """NaN or inf points never abort a dataset: such frames fall back like tracking failures."""
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    all_nan = src / "Actor_01/01-01-02-01-01-01-01.mp4"
    _rewrite_landmarks(all_nan.with_suffix(".csv"), slice(None), "x_5", "nan")
    some_inf = src / FIRST_CLIP
    _rewrite_landmarks(some_inf.with_suffix(".csv"), slice(0, None, 2), "y_30", "inf")  # every sampled frame's row among them
    untracked = tmp_path / "untracked.csv"  # the same rows marked as OpenFace tracking failures
    shutil.copy(synthetic_ravdess / FIRST_CLIP.replace(".mp4", ".csv"), untracked)
    _rewrite_landmarks(untracked, slice(0, None, 2), "success", "0")

    with pytest.warns(LandmarkFallbackWarning, match="1 of 8 clips"):
        report = prepare_ravdess(src, tmp_path / "out", LITE_PREPROCESS, workers=1)
    assert report.prepared == 8 and report.centre_cropped == (all_nan,)
    manifest = json.loads(report.manifest_path.read_text())
    assert manifest["centre_cropped"] == [all_nan.stem]
    table = _arrow(tmp_path / "out")
    row = table.column("clip_id").to_pylist().index(some_inf.stem)
    video = table.column("video")[row].values.to_numpy().reshape(8, 64, 64, 3)
    np.testing.assert_array_equal(video, read_clip(some_inf, untracked, LITE_PREPROCESS).video)


def test_failed_prepare_keeps_the_previous_dataset(prepared_lite: Path, tmp_path: Path):
    src = tmp_path / "src" / "Actor_01"
    src.mkdir(parents=True)
    (src / "01-01-01-01-01-01-01.mp4").touch()
    out = tmp_path / "out"
    shutil.copytree(prepared_lite, out)
    manifest = json.loads((out / "manifest.json").read_text())  # as if prepared from src: a refresh
    (out / "manifest.json").write_text(json.dumps({**manifest, "source": str(src.parent.resolve())}))
    with pytest.raises(DataError, match=r"no clip under .* could be prepared.*empty file"):
        prepare_ravdess(src.parent, out, LITE_PREPROCESS, workers=1)
    assert sorted(path.name for path in out.iterdir()) == ["clips.arrow", "manifest.json", "skipped.json"]
    assert len(PreparedDataset(out)) == 48


def test_prepared_dataset_errors_name_the_file(prepared_lite: Path, tmp_path: Path):
    with pytest.raises(DataError, match="manifest.json is missing"):
        PreparedDataset(tmp_path / "nothing")
    manifest = json.loads((prepared_lite / "manifest.json").read_text())
    cases = {
        "corrupt": ("{not json", None, "unreadable manifest"),
        "version": (json.dumps({**manifest, "format_version": 2}), None, "format_version 2 is not supported"),
        "key": (json.dumps({**manifest, "preprocess": {**manifest["preprocess"], "crop_size": 32}}), None, "not match"),
        "count": (json.dumps({**manifest, "num_clips": 47}), None, "48 clips, but the manifest says 47"),
        "arrow": (json.dumps(manifest), b"ARROW1 truncated", "not a readable Arrow IPC file"),
    }
    for name, (text, arrow, message) in cases.items():
        folder = tmp_path / name
        shutil.copytree(prepared_lite, folder)
        (folder / "manifest.json").write_text(text)
        if arrow is not None:
            (folder / "clips.arrow").write_bytes(arrow)
        with pytest.raises(DataError, match=message) as info:
            PreparedDataset(folder)
        assert str(folder) in str(info.value)


def test_overflowing_or_far_off_landmarks_fall_back_like_untracked_frames(synthetic_ravdess: Path, tmp_path: Path):
    """Points such as 1e308 overflowed the crop's arithmetic (OverflowError, nothing prepared);
    a box wholly outside the image is no face either: such frames count as untracked."""
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    huge = src / "Actor_01/01-01-02-01-01-01-01.mp4"
    _rewrite_landmarks(huge.with_suffix(".csv"), slice(None), "x_3", "1e308")
    _rewrite_landmarks(huge.with_suffix(".csv"), slice(None), "x_4", "-1e308")
    far = src / "Actor_01/01-01-03-01-01-01-01.mp4"
    for i in range(68):
        _rewrite_landmarks(far.with_suffix(".csv"), slice(None), f"x_{i}", str(5000 + i))
    some_far = src / FIRST_CLIP  # every other row's box far too tall: those frames use their neighbours
    _rewrite_landmarks(some_far.with_suffix(".csv"), slice(0, None, 2), "y_30", "1e9")
    _rewrite_landmarks(some_far.with_suffix(".csv"), [1], "frame", "1e308")  # a frame number no video reaches
    untracked = tmp_path / "untracked.csv"
    shutil.copy(synthetic_ravdess / FIRST_CLIP.replace(".mp4", ".csv"), untracked)
    _rewrite_landmarks(untracked, slice(0, None, 2), "success", "0")
    _rewrite_landmarks(untracked, [1], "success", "0")

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no numpy overflow or cast warning either
        with pytest.warns(LandmarkFallbackWarning, match="no face box in .* fits the video frame"):
            read_clip(far, far.with_suffix(".csv"), LITE_PREPROCESS)
        expected = read_clip(some_far, some_far.with_suffix(".csv"), LITE_PREPROCESS).video
    np.testing.assert_array_equal(expected, read_clip(some_far, untracked, LITE_PREPROCESS).video)
    with pytest.warns(LandmarkFallbackWarning, match="2 of 8 clips"):
        report = prepare_ravdess(src, tmp_path / "out", LITE_PREPROCESS, workers=2)
    assert report.prepared == 8 and set(report.centre_cropped) == {huge, far}
    table = _arrow(tmp_path / "out")
    row = table.column("clip_id").to_pylist().index(some_far.stem)
    np.testing.assert_array_equal(table.column("video")[row].values.to_numpy().reshape(8, 64, 64, 3), expected)


def test_an_unexpected_error_in_one_clip_skips_it_naming_the_error(
    synthetic_ravdess: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A bug or an unforeseen file ends neither the run nor its report: the clip is skipped,
    with the exception's type in skipped.json and on the console."""
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    odd = src / "Actor_01/01-01-04-01-01-01-01.mp4"
    real = prepare_module.read_clip

    def failing(path: Path, *args: object) -> object:
        if path == odd:
            raise OverflowError("cannot convert float infinity to integer")
        return real(path, *args)

    monkeypatch.setattr(prepare_module, "read_clip", failing)
    assert main(["data", "prepare", str(src), str(tmp_path / "out"), "--jobs", "1"]) == 0
    reason = "unexpected OverflowError while decoding (cannot convert float infinity to integer)"
    assert f"skipped {odd}: {reason}\n" in capsys.readouterr().out
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert {"path": str(odd), "reason": reason} in skipped
    assert len(PreparedDataset(tmp_path / "out")) == 7


def test_prepare_refuses_to_replace_a_different_dataset(
    synthetic_ravdess: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    other = _copy_actors(synthetic_ravdess, tmp_path / "other", [2])
    out = tmp_path / "out"
    prepare_ravdess(src, out, LITE_PREPROCESS, workers=1)
    prepare_ravdess(src, out, LITE_PREPROCESS, workers=1)  # the same source and preprocessing: a refresh
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    key = LITE_PREPROCESS.key()
    with pytest.raises(DataError) as info:
        prepare_ravdess(other, out, LITE_PREPROCESS, workers=1)
    assert str(info.value) == (
        f"{out} already holds a dataset prepared from {src.resolve()} with preprocessing {key}; "
        f"this run prepares {other.resolve()} with preprocessing {key}: choose another OUT or delete it"
    )
    smaller = replace(LITE_PREPROCESS, crop_size=32)
    with pytest.raises(DataError, match=rf"from {src.resolve()} with preprocessing {key}; this run prepares "
                                        rf"{src.resolve()} with preprocessing {smaller.key()} \(crop_size 64 -> 32\): "):
        prepare_ravdess(src, out, smaller, workers=1)
    assert main(["data", "prepare", str(other), str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tacfn: error: {out} already holds a dataset") and err.count("\n") == 1, err
    with pytest.raises(DataError, match="does not exist"):  # a mistyped source says so, not "delete OUT"
        prepare_ravdess(tmp_path / "typo", out, LITE_PREPROCESS, workers=1)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_media_outside_actor_folders_is_reported_as_skipped(synthetic_ravdess: Path, tmp_path: Path):
    """A misspelled Actor_6 folder or clips loose in the root were dropped without a word."""
    src = _copy_actors(synthetic_ravdess, tmp_path / "src", [1])
    (src / "Actor_6").mkdir()
    misspelled = src / "Actor_6/01-01-01-01-01-01-06.mp4"
    shutil.copy(src / FIRST_CLIP, misspelled)
    loose = src / "01-01-02-01-01-01-01.mp4"
    shutil.copy(src / "Actor_01/01-01-02-01-01-01-01.mp4", loose)
    nested = src / "Actor_01/extra/01-01-03-01-01-01-01.mp4"
    nested.parent.mkdir()
    shutil.copy(src / "Actor_01/01-01-03-01-01-01-01.mp4", nested)
    wav = src / "03-01-01-01-01-01-01.wav"
    wav.write_bytes(b"RIFF")
    (src / "notes.wav").write_bytes(b"RIFF")  # not a RAVDESS name: ignored, as inside an actor folder

    report = prepare_ravdess(src, tmp_path / "out", LITE_PREPROCESS, workers=1)
    reasons = dict(report.skipped)
    assert set(reasons) == {misspelled, loose, nested, wav, src / FIRST_TWIN}
    for path in (misspelled, loose, nested, wav):
        assert reasons[path].startswith(f"not inside an Actor_NN folder (it is in {path.parent.name!r})")
    skipped = {entry["path"] for entry in json.loads(report.skipped_path.read_text())}
    assert skipped == {str(path) for path in reasons}
    assert report.prepared == 8


def test_landmark_file_with_a_header_and_no_rows_falls_back_quietly(synthetic_ravdess: Path, tmp_path: Path):
    """numpy's multi-line 'loadtxt: input contained no data' warning no longer interrupts the
    progress output: the project's own one-line fallback warning says it."""
    clip = synthetic_ravdess / FIRST_CLIP
    header_only = tmp_path / "header_only.csv"
    header_only.write_text(clip.with_suffix(".csv").read_text().splitlines()[0] + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_face_boxes(header_only) is None
        read_clip(clip, header_only, LITE_PREPROCESS)
    assert [(w.category, str(w.message)) for w in caught] == [
        (LandmarkFallbackWarning, f"{clip.name}: no tracked frame in header_only.csv; used a centre square crop (no face detector is installed)")
    ]
