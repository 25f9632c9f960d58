from __future__ import annotations

import gc
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from tacfn.data.iemocap import (
    IEMOCAP_EMOTIONS,
    IemocapDataset,
    convert_iemocap,
    write_synthetic_iemocap,
)
from tacfn.cli import main
from tacfn.config import parse_run_config
from tacfn.errors import DataError
from tacfn.tasks import load_task

LENGTHS = (6, 9, 11)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("src") / "iemocap_data_noalign.pkl"
    return write_synthetic_iemocap(path, n_train=24, n_valid=8, n_test=10, lengths=LENGTHS, seed=3)


@pytest.fixture(scope="module")
def converted(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_iemocap(source, tmp_path_factory.mktemp("converted"), allow_pickle=True)


def _load(path: Path) -> dict:
    with path.open("rb") as f:
        return pickle.load(f)


def _dump(data: dict, path: Path) -> Path:
    with path.open("wb") as f:
        pickle.dump(data, f)
    return path


def test_synthetic_file_has_mult_layout(source: Path) -> None:
    data = _load(source)
    assert set(data) == {"train", "valid", "test"}
    split = data["valid"]
    assert split["text"].shape == (8, LENGTHS[0], 300)
    assert split["audio"].shape == (8, LENGTHS[1], 74)
    assert split["vision"].shape == (8, LENGTHS[2], 35)
    assert split["labels"].shape == (8, 4, 2)
    # One emotion per utterance, one-hot pairs per emotion.
    np.testing.assert_array_equal(split["labels"].sum(axis=-1), 1)
    np.testing.assert_array_equal(split["labels"][:, :, 1].sum(axis=1), 1)
    assert np.isneginf(data["train"]["audio"]).any()


def test_synthetic_file_is_deterministic_per_seed(tmp_path: Path) -> None:
    a = _load(write_synthetic_iemocap(tmp_path / "a.pkl", n_train=3, n_valid=2, n_test=2, seed=1))
    b = _load(write_synthetic_iemocap(tmp_path / "b.pkl", n_train=3, n_valid=2, n_test=2, seed=1))
    c = _load(write_synthetic_iemocap(tmp_path / "c.pkl", n_train=3, n_valid=2, n_test=2, seed=2))
    np.testing.assert_array_equal(a["train"]["text"], b["train"]["text"])
    assert not np.array_equal(a["train"]["text"], c["train"]["text"])


@pytest.mark.parametrize("modality", ["text", "audio", "vision"])
def test_synthetic_signal_is_learnable_from_each_modality(tmp_path: Path, modality: str) -> None:
    path = write_synthetic_iemocap(tmp_path / "s.pkl", n_train=200, n_valid=1, n_test=200, seed=0)
    data = _load(path)

    def pooled(split: str) -> tuple[np.ndarray, np.ndarray]:
        x = np.where(np.isneginf(data[split][modality]), 0.0, data[split][modality]).mean(axis=1)
        return x, data[split]["labels"][:, :, 1].argmax(axis=1)

    x_train, y_train = pooled("train")
    x_test, y_test = pooled("test")
    centroids = np.stack([x_train[y_train == e].mean(axis=0) for e in range(4)])
    predicted = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(axis=1)
    assert (predicted == y_test).mean() > 0.9  # chance is 0.25


def test_convert_writes_arrow_files_and_manifest(converted: Path, source: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == [
        "manifest.json",
        "test.arrow",
        "train.arrow",
        "valid.arrow",
    ]
    manifest = json.loads((converted / "manifest.json").read_text())
    assert manifest["version"] == 1
    assert manifest["emotions"] == list(IEMOCAP_EMOTIONS)
    assert manifest["modalities"] == {"text": [6, 300], "audio": [9, 74], "vision": [11, 35]}
    assert manifest["splits"] == {"train": 24, "valid": 8, "test": 10}
    assert manifest["source"] == source.name
    for split in ("train", "valid", "test"):
        digest = hashlib.sha256((converted / f"{split}.arrow").read_bytes()).hexdigest()
        assert manifest["sha256"][split] == digest == IemocapDataset(converted, split).content_digest


def test_dataset_shapes_labels_and_values(converted: Path, source: Path) -> None:
    raw = _load(source)["test"]
    dataset = IemocapDataset(converted, "test")
    assert len(dataset) == 10
    assert dataset.input_shapes == {"text": (6, 300), "audio": (9, 74), "vision": (11, 35)}
    np.testing.assert_array_equal(dataset.labels, raw["labels"].argmax(axis=-1))
    assert dataset.labels.dtype == np.int64 and dataset.labels.shape == (10, 4)

    indices = np.array([7, 0, 7, 3])
    batch = dataset.batch(indices)
    assert batch["text"].shape == (4, 6, 300) and batch["text"].dtype == torch.float32
    assert batch["audio"].shape == (4, 9, 74) and batch["vision"].shape == (4, 11, 35)
    assert batch["label"].dtype == torch.int64 and batch["label"].shape == (4, 4)
    np.testing.assert_array_equal(batch["index"].numpy(), indices)
    np.testing.assert_array_equal(batch["text"].numpy(), raw["text"][indices])
    np.testing.assert_array_equal(batch["vision"].numpy(), raw["vision"][indices])
    np.testing.assert_array_equal(batch["label"].numpy(), raw["labels"][indices].argmax(axis=-1))
    assert dataset.ids[7] == ("synthetic_test_00007", "0", "6")


def test_audio_minus_inf_is_zeroed(converted: Path, source: Path) -> None:
    raw = _load(source)["train"]["audio"]
    assert np.isneginf(raw).any()
    audio = IemocapDataset(converted, "train").batch(np.arange(24))["audio"].numpy()
    assert np.isfinite(audio).all()
    np.testing.assert_array_equal(audio[np.isneginf(raw)], 0.0)
    np.testing.assert_array_equal(audio[~np.isneginf(raw)], raw[~np.isneginf(raw)])


def test_dataset_is_memory_mapped_and_pickles_by_value(converted: Path) -> None:
    gc.collect()  # free earlier tests' Arrow buffers before measuring
    before = pa.total_allocated_bytes()
    dataset = IemocapDataset(converted, "train")
    assert pa.total_allocated_bytes() == before
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy.batch([1, 2])["audio"], dataset.batch([1, 2])["audio"])


def test_batch_rejects_out_of_range_indices(converted: Path) -> None:
    dataset = IemocapDataset(converted, "valid")
    with pytest.raises(IndexError, match="index=8"):
        dataset.batch([0, 8])
    with pytest.raises(IndexError, match="index=-1"):
        dataset.batch([-1])


def test_unknown_split_lists_valid_ones(converted: Path) -> None:
    with pytest.raises(ValueError, match=r"'dev'.*\['train', 'valid', 'test'\]"):
        IemocapDataset(converted, "dev")


def test_refuses_pickle_without_allow_pickle(source: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="allow_pickle=True"):
        convert_iemocap(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _corrupt(data: dict, split: str, key: str, kind: str) -> None:
    if kind == "dim":
        data[split][key] = data[split][key][..., :-1]
    elif kind == "rows":
        data[split][key] = data[split][key][:-1]
    elif kind == "missing":
        del data[split][key]
    elif kind == "text":
        data[split][key] = np.full(data[split][key].shape, "x")
    elif kind == "scalar":
        data[split][key] = 3
    elif kind == "nan":
        data[split][key] = data[split][key].copy()
        data[split][key][0, 0, 0] = np.nan


@pytest.mark.parametrize(
    ("split", "key", "kind", "message"),
    [
        ("valid", "audio", "dim", r"split 'valid', key 'audio' must have shape \(N, L, 74\)"),
        ("test", "vision", "rows", r"split 'test', key 'vision' must have shape \(N, L, 35\) with N=10"),
        ("train", "labels", "dim", r"split 'train', key 'labels' must have shape \(N, 4, 2\)"),
        ("valid", "labels", "scalar", r"split 'valid', key 'labels' must have shape \(N, 4, 2\).*got \(\)"),
        ("train", "text", "missing", r"split 'train' has no key 'text'"),
        ("valid", "labels", "text", r"split 'valid', key 'labels' must be numeric"),
        ("test", "text", "nan", r"split 'test', key 'text' has 1 non-finite"),
    ],
)
def test_malformed_source_names_split_and_key(
    source: Path, tmp_path: Path, split: str, key: str, kind: str, message: str
) -> None:
    data = _load(source)
    _corrupt(data, split, key, kind)
    bad = _dump(data, tmp_path / "bad.pkl")
    with pytest.raises(DataError, match=message):
        convert_iemocap(bad, tmp_path / "out", allow_pickle=True)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_sequence_length_must_match_across_splits(source: Path, tmp_path: Path) -> None:
    data = _load(source)
    data["test"]["audio"] = data["test"]["audio"][:, :-2]
    with pytest.raises(DataError, match=r"split 'test', key 'audio' has sequence length 7"):
        convert_iemocap(_dump(data, tmp_path / "bad.pkl"), tmp_path / "out", allow_pickle=True)


def test_missing_split_and_unreadable_pickle(source: Path, tmp_path: Path) -> None:
    data = _load(source)
    del data["valid"]
    with pytest.raises(DataError, match="missing split 'valid'"):
        convert_iemocap(_dump(data, tmp_path / "bad.pkl"), tmp_path / "out", allow_pickle=True)
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"junk\.pkl is not a readable pickle"):
        convert_iemocap(tmp_path / "junk.pkl", tmp_path / "out", allow_pickle=True)


def test_source_without_ids_converts(source: Path, tmp_path: Path) -> None:
    data = _load(source)
    for split in data.values():
        del split["id"]
    out = convert_iemocap(_dump(data, tmp_path / "noid.pkl"), tmp_path / "out", allow_pickle=True)
    dataset = IemocapDataset(out, "valid")
    assert dataset.ids is None
    assert len(dataset) == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_arrow_file_raises_data_error_naming_it(converted: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in converted.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    target = copy / "valid.arrow"
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"\x00" * len(content))
    with pytest.raises(DataError, match=r"valid\.arrow"):
        IemocapDataset(copy, "valid")
    assert len(IemocapDataset(copy, "train")) == 24  # the other splits are unaffected


def test_folder_without_manifest_raises(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no manifest\.json"):
        IemocapDataset(tmp_path, "train")


def test_empty_split_is_refused_naming_it(source: Path, tmp_path: Path) -> None:
    data = _load(source)
    data["valid"] = {key: value[:0] for key, value in data["valid"].items()}
    bad = _dump(data, tmp_path / "bad.pkl")
    with pytest.raises(DataError, match=r"bad\.pkl: split 'valid' has no rows"):
        convert_iemocap(bad, tmp_path / "out", allow_pickle=True)


def test_labels_that_are_not_one_hot_are_refused(source: Path, tmp_path: Path) -> None:
    """A pair with no 1 would silently become class 0 under MulT's argmax."""
    data = _load(source)
    data["train"]["labels"][[3, 7], 2] = 0.0
    bad = _dump(data, tmp_path / "bad.pkl")
    with pytest.raises(DataError, match=r"split 'train', key 'labels' has 2 of 24 rows that are not one-hot.*row 3"):
        convert_iemocap(bad, tmp_path / "out", allow_pickle=True)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_output_path_that_is_a_file_is_refused(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me\n")
    assert main(["data", "iemocap", str(source), str(afile)]) == 2
    assert capsys.readouterr().err == (
        f"tacfn: error: {afile} exists and is not a folder; name a new or existing folder for the conversion\n"
    )
    assert afile.read_text() == "keep me\n"


def test_a_named_pickle_is_converted_again_when_it_changes(source: Path, tmp_path: Path) -> None:
    """``data.path: x.pkl`` converts to ``x-arrow`` once, and again after the pickle changes."""
    pkl = tmp_path / "good.pkl"
    pkl.write_bytes(source.read_bytes())
    cfg = parse_run_config({"model": {"preset": "iemocap"}, "data": {"path": str(pkl)}})
    manifest = tmp_path / "good-arrow" / "manifest.json"
    first = load_task(cfg)
    converted_at = manifest.stat().st_mtime_ns
    assert load_task(cfg).content_digest == first.content_digest
    assert manifest.stat().st_mtime_ns == converted_at  # unchanged source: the conversion is reused
    write_synthetic_iemocap(pkl, n_train=24, n_valid=8, n_test=10, lengths=LENGTHS, seed=4)
    assert pkl.stat().st_size == source.stat().st_size  # same size, other data: the mtime tells
    second = load_task(cfg)
    assert second.content_digest != first.content_digest
    fresh = convert_iemocap(pkl, tmp_path / "fresh", allow_pickle=True)
    np.testing.assert_array_equal(second.train.labels, IemocapDataset(fresh, "train").labels)
