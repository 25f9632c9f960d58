from __future__ import annotations

import gc
import pickle
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tacfn.data.feature_cache import CachedFeatures, FeatureCache, cache_key, encode_to_cache
from tacfn.data.preprocessing import LITE_PREPROCESS, PAPER_PREPROCESS
from tacfn.errors import DataError

KEY = cache_key("resnext50", "weights-a", LITE_PREPROCESS.key())


def _features(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "video": rng.normal(size=(n, 8, 2, 3, 3)).astype(np.float32),
        "audio": rng.normal(size=(n, 4, 5)).astype(np.float16),
    }


def _ids(n: int, start: int = 0) -> list[str]:
    return [f"clip{i:03d}" for i in range(start, start + n)]


class CountingEncoder:
    """A real (deterministic) encoder that records how often and how it was called."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls = 0
        self.inference_mode: list[bool] = []
        self.fail_on_call = fail_on_call
        self.weight = torch.linspace(-1.0, 1.0, 6)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self.calls += 1
        self.inference_mode.append(torch.is_inference_mode_enabled())
        if self.calls == self.fail_on_call:
            raise RuntimeError("encoder crashed")
        x = inputs["x"]
        return {"video": x[:, :, None] * self.weight, "audio": x.sum(dim=1, keepdim=True).double()}


def _batches(
    n_batches: int, size: int = 4, start: int = 0
) -> list[tuple[list[str], dict[str, torch.Tensor]]]:
    out = []
    for b in range(n_batches):
        first = start + b * size
        x = torch.arange(first * 3, (first + size) * 3, dtype=torch.float32).reshape(size, 3) / 10
        out.append((_ids(size, first), {"x": x}))
    return out


def _expected(batches: list[tuple[list[str], dict[str, torch.Tensor]]]) -> dict[str, np.ndarray]:
    encoder = CountingEncoder()
    outs = [encoder(inputs) for _, inputs in batches]
    return {name: torch.cat([o[name] for o in outs]).float().numpy() for name in outs[0]}


def test_write_load_round_trip(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    features = _features(10)
    path = cache.write(KEY, _ids(10), features)
    assert path == cache.path_for(KEY) and path.is_file()

    cached = cache.load(KEY)
    assert cached.clip_ids == _ids(10)
    assert cached.shapes == {"video": (8, 2, 3, 3), "audio": (4, 5)}
    batch = cached.batch(np.arange(10))
    assert all(t.dtype == torch.float32 for t in batch.values())
    np.testing.assert_array_equal(batch["video"].numpy(), features["video"])  # stored as float32
    np.testing.assert_array_equal(batch["audio"].numpy(), features["audio"].astype(np.float32))


def test_features_are_stored_channels_last_and_read_channels_first(tmp_path: Path) -> None:
    features = _features(4)
    path = FeatureCache(tmp_path).write(KEY, _ids(4), features)
    stored = pa.ipc.open_file(pa.memory_map(str(path))).read_all().column("video").combine_chunks()
    np.testing.assert_array_equal(
        stored.flatten().to_numpy().reshape(4, 2, 3, 3, 8), features["video"].transpose(0, 2, 3, 4, 1)
    )
    video = FeatureCache(tmp_path).load(KEY).batch(np.array([2, 0]))["video"]
    assert video.shape == (2, 8, 2, 3, 3) and video.is_contiguous(memory_format=torch.channels_last_3d)
    np.testing.assert_array_equal(video.numpy(), features["video"][[2, 0]])
    # the (B, positions, C) view a fusion block projects is contiguous: no transposing copy
    assert video.flatten(2).transpose(1, 2).is_contiguous()


def test_file_of_an_older_format_is_rebuilt(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    path = cache.write(KEY, _ids(8), _features(8))
    table = pa.ipc.open_file(pa.BufferReader(path.read_bytes())).read_all()
    meta = {k: v.replace(b'"version": 2', b'"version": 1') for k, v in table.schema.metadata.items()}
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as writer:
        writer.write_table(table.replace_schema_metadata(meta))
    with pytest.raises(DataError, match="has format version 1, but this tacfn reads 2"):
        cache.load(KEY)
    assert not cache.has(KEY, _ids(8))
    encoder = CountingEncoder()
    with pytest.warns(RuntimeWarning, match="rebuilding the feature cache file"):
        encode_to_cache(encoder, _batches(2), cache, KEY)
    assert encoder.calls == 2 and cache.has(KEY, _ids(8))


def test_rows_for_follows_request_order(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    features = _features(6)
    cache.write(KEY, _ids(6), features)
    cached = cache.load(KEY)
    rows = cached.rows_for(["clip004", "clip000", "clip004", "clip002"])
    np.testing.assert_array_equal(rows, [4, 0, 4, 2])
    np.testing.assert_array_equal(cached.batch(rows)["video"].numpy(), features["video"][[4, 0, 4, 2]])


def test_missing_clip_id_raises_data_error(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.write(KEY, _ids(3), _features(3))
    with pytest.raises(DataError, match=r"1 clip id\(s\) are not in feature cache .*'clip099'"):
        cache.load(KEY).rows_for(["clip000", "clip099"])


def test_has_checks_file_and_clips(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    assert not cache.has(KEY, _ids(2))
    cache.write(KEY, _ids(3), _features(3))
    assert cache.has(KEY, _ids(3))
    assert cache.has(KEY, ["clip001"])
    assert not cache.has(KEY, _ids(4))


def test_key_depends_on_every_part() -> None:
    keys = {
        cache_key("resnext50", "weights-a", LITE_PREPROCESS.key()),
        cache_key("resnext50", "weights-b", LITE_PREPROCESS.key()),
        cache_key("resnext50", "weights-a", PAPER_PREPROCESS.key()),
        cache_key("mfcc_cnn", "weights-a", LITE_PREPROCESS.key()),
    }
    assert len(keys) == 4
    assert cache_key("resnext50", "weights-a", LITE_PREPROCESS.key()) == KEY
    assert KEY.startswith("resnext50-")
    assert cache_key("3D ResNeXt/50", "w", "p").startswith("3D_ResNeXt_50-")
    with pytest.raises(ValueError, match="`weights_hash` must be a non-empty string"):
        cache_key("resnext50", "", "p")


def test_different_key_is_a_different_file(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    other = cache_key("resnext50", "weights-b", LITE_PREPROCESS.key())
    assert cache.path_for(other) != cache.path_for(KEY)
    encoder = CountingEncoder()
    encode_to_cache(encoder, _batches(2), cache, KEY)
    encode_to_cache(encoder, _batches(2), cache, other)
    assert encoder.calls == 4  # the second key did not reuse the first key's features
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{KEY}.arrow", f"{other}.arrow"])


def test_unsafe_key_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="a cache key must match"):
        FeatureCache(tmp_path).path_for("../escape")


def test_load_is_memory_mapped_and_pickles_by_value(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    cache.write(KEY, _ids(20), _features(20))
    gc.collect()  # free earlier tests' Arrow buffers before measuring
    before = pa.total_allocated_bytes()
    cached = cache.load(KEY)
    assert pa.total_allocated_bytes() == before  # buffers point into the mapping
    copy = pickle.loads(pickle.dumps(cached))
    assert isinstance(copy, CachedFeatures) and copy.clip_ids == cached.clip_ids
    np.testing.assert_array_equal(copy.batch([3, 1])["video"], cached.batch([3, 1])["video"])


def test_encode_to_cache_streams_batches_and_matches_encoder(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    batches = _batches(3)
    encoder = CountingEncoder()
    cached = encode_to_cache(encoder, batches, cache, KEY)
    assert encoder.calls == 3 and all(encoder.inference_mode)
    assert cached.clip_ids == _ids(12)
    assert cached.shapes == {"video": (3, 6), "audio": (1,)}
    assert cache.path_for(KEY).stat().st_size > 0
    expected = _expected(batches)
    rows = np.array([11, 0, 5, 4, 3])  # spans all three record batches, out of order
    got = cached.batch(rows)
    np.testing.assert_allclose(got["video"].numpy(), expected["video"][rows], rtol=1e-3)  # float16
    np.testing.assert_allclose(got["audio"].numpy(), expected["audio"][rows], rtol=1e-3)
    assert not np.array_equal(got["video"].numpy(), expected["video"][rows])  # really float16


def test_encode_to_cache_float32_is_exact(tmp_path: Path) -> None:
    batches = _batches(2)
    cached = encode_to_cache(CountingEncoder(), batches, FeatureCache(tmp_path), KEY, dtype=np.float32)
    np.testing.assert_array_equal(cached.batch(np.arange(8))["video"].numpy(), _expected(batches)["video"])


def test_cache_hit_does_not_encode_again(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    encoder = CountingEncoder()
    first = encode_to_cache(encoder, _batches(3), cache, KEY)
    mtime = cache.path_for(KEY).stat().st_mtime_ns
    second = encode_to_cache(encoder, _batches(3), cache, KEY)
    assert encoder.calls == 3
    assert cache.path_for(KEY).stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.batch(np.arange(12))["video"], first.batch(np.arange(12))["video"])


def test_new_clips_are_encoded_and_old_clips_kept(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    encoder = CountingEncoder()
    encode_to_cache(encoder, _batches(2), cache, KEY)  # clips 0-7
    batches = _batches(2, start=4)  # clips 4-7 (cached) and 8-11 (new)
    cached = encode_to_cache(encoder, batches, cache, KEY)
    assert encoder.calls == 3  # only the batch of new clips was encoded
    assert sorted(cached.clip_ids) == _ids(12)
    expected = _expected(_batches(3))
    rows = cached.rows_for(_ids(12))
    np.testing.assert_allclose(cached.batch(rows)["video"].numpy(), expected["video"], rtol=1e-3)


def test_failed_encoding_keeps_previous_file(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    encode_to_cache(CountingEncoder(), _batches(1), cache, KEY)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        encode_to_cache(CountingEncoder(fail_on_call=2), _batches(3, start=4), cache, KEY)
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.arrow"]  # no temporary file left
    assert cache.load(KEY).clip_ids == _ids(4)


def test_features_that_overflow_float16_are_refused_and_the_previous_file_kept(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    encode_to_cache(CountingEncoder(), _batches(1), cache, KEY)
    huge = _batches(2, start=4)
    huge[1][1]["x"][2] = 1e5  # clip 10's video features reach 1e5 > 65504, inf in float16
    with pytest.raises(DataError, match=r"video features of 1 clip\(s\), e.g. \['clip010'\], are infinite as float16 "
                       r"\(largest 65504\)"):
        encode_to_cache(CountingEncoder(), huge, cache, KEY)
    assert [p.name for p in tmp_path.iterdir()] == [f"{KEY}.arrow"]
    assert cache.load(KEY).clip_ids == _ids(4)
    cached = encode_to_cache(CountingEncoder(), huge, cache, KEY, dtype=np.float32)  # float32 holds them
    assert len(cached) == 12


def test_nan_features_are_refused(tmp_path: Path) -> None:
    features = _features(3)
    features["audio"][1, 2, 0] = np.nan
    with pytest.raises(DataError, match=r"audio features of 1 clip\(s\), e.g. \['clip001'\], are NaN;"):
        FeatureCache(tmp_path).write(KEY, _ids(3), features)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_file_raises_then_is_rebuilt(tmp_path: Path, damage: str) -> None:
    cache = FeatureCache(tmp_path)
    path = cache.write(KEY, _ids(8), _features(8))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"\xff" * len(content))
    with pytest.raises(DataError, match=re.escape(f"feature cache file {path} is unreadable")):
        cache.load(KEY)
    assert not cache.has(KEY, _ids(1)), "an unreadable file is no cache hit: it gets rebuilt"

    encoder = CountingEncoder()
    with pytest.warns(RuntimeWarning, match=re.escape(f"rebuilding the feature cache file {path}")):
        cached = encode_to_cache(encoder, _batches(2), cache, KEY)
    assert encoder.calls == 2 and cached.clip_ids == _ids(8)
    assert cache.load(KEY).shapes == {"video": (3, 6), "audio": (1,)}


def test_foreign_arrow_file_is_not_a_cache(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    table = pa.table({"clip_id": ["a"], "video": [[1.0, 2.0]]})
    with pa.OSFile(str(cache.path_for(KEY)), "wb") as f, pa.ipc.new_file(f, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(DataError, match="is not a tacfn feature cache file"):
        cache.load(KEY)


def test_file_of_another_key_is_refused(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    other = cache_key("resnext50", "weights-b", LITE_PREPROCESS.key())
    cache.write(other, _ids(2), _features(2))
    cache.path_for(other).rename(cache.path_for(KEY))
    with pytest.raises(DataError, match="holds key"):
        cache.load(KEY)


@pytest.mark.parametrize(
    ("clip_ids", "features", "message"),
    [
        (_ids(3), {"video": np.zeros((2, 4), np.float32)}, r"one row per clip id \(3\)"),
        (["a", "a"], {"video": np.zeros((2, 4), np.float32)}, r"clip id\(s\) \['a'\] repeat"),
        (_ids(2), {"video": np.zeros((2, 4), np.int64)}, r"dtype int64; valid: \['float16', 'float32'\]"),
        (_ids(2), {}, "one or more modalities"),
        (_ids(2), {"clip_id": np.zeros((2, 4), np.float32)}, "other than 'clip_id'"),
    ],
)
def test_write_validates_input(tmp_path: Path, clip_ids: list[str], features: dict, message: str) -> None:
    cache = FeatureCache(tmp_path)
    with pytest.raises(ValueError, match=message):
        cache.write(KEY, clip_ids, features)
    assert list(tmp_path.iterdir()) == []


def test_encoder_shape_change_between_batches_is_refused(tmp_path: Path) -> None:
    def encode(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"video": inputs["x"] if inputs["x"][0, 0] == 0 else inputs["x"][:, :2]}

    with pytest.raises(ValueError, match=r"per-sample shape \(3,\), but got \(2,\)"):
        encode_to_cache(encode, _batches(2), FeatureCache(tmp_path), KEY)
    assert list(tmp_path.iterdir()) == []


def test_empty_batches_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the batches were empty"):
        encode_to_cache(CountingEncoder(), [], FeatureCache(tmp_path), KEY)


def _frozen_task(data: Path, cache_dir: Path):
    from tacfn.config import parse_run_config
    from tacfn.tasks import load_task
    from tacfn.training import Trainer

    cfg = parse_run_config({
        "model": {"preset": "lite", "backbone": "frozen"},
        "data": {"path": str(data), "cache_dir": str(cache_dir)},
        "train": {"epochs": 1},
    })
    return Trainer(cfg, load_task(cfg)).task


def test_datasets_with_the_same_clip_ids_do_not_share_features(prepared_lite: Path, tmp_path: Path) -> None:
    """Every RAVDESS tree has the same file names: a frozen run on another dataset encodes its
    own clips instead of reading the first dataset's features under the same clip ids."""
    from tacfn.data.prepare import prepare_ravdess
    from tacfn.data.synth import write_synthetic_ravdess

    other = tmp_path / "prepared-seed1"
    prepare_ravdess(write_synthetic_ravdess(tmp_path / "raw-seed1", actors=6, clips_per_actor=8, seed=1), other, LITE_PREPROCESS, workers=2)
    first, second = _frozen_task(prepared_lite, tmp_path / "cache"), _frozen_task(other, tmp_path / "cache")
    assert first.train.ids == second.train.ids
    rows = np.arange(6)
    assert not torch.equal(first.train.batch(rows)["audio"], second.train.batch(rows)["audio"])
    alone = _frozen_task(other, tmp_path / "cache-alone")
    for name in ("video", "audio"):
        assert torch.equal(second.train.batch(rows)[name], alone.train.batch(rows)[name])
