"""Speaker-independent folds: coverage, disjointness, the two protocols, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tacfn.data.prepared import PreparedDataset
from tacfn.data.splits import FOLDS, PROTOCOLS, Fold, get_fold, make_folds

RAVDESS_ACTORS = list(range(1, 25))


def _assert_partition(fold: Fold, actors: list[int]) -> None:
    train, val, test = set(fold.train_actors), set(fold.val_actors), set(fold.test_actors)
    assert train and val and test
    assert not train & val and not train & test
    assert train | val | test == set(actors)


def test_6fold_on_ravdess_tests_every_actor_once_and_validates_elsewhere():
    folds = make_folds(RAVDESS_ACTORS)
    assert [fold.index for fold in folds] == list(range(6))
    for k, fold in enumerate(folds):
        _assert_partition(fold, RAVDESS_ACTORS)
        assert not set(fold.val_actors) & set(fold.test_actors)
        assert len(fold.test_actors) == 4 and len(fold.train_actors) == 16
        assert sum(actor % 2 for actor in fold.test_actors) == 2  # 2 male, 2 female
        assert fold.val_actors == folds[(k + 1) % 6].test_actors
        assert list(fold.test_actors) == sorted(fold.test_actors)
    tested = [actor for fold in folds for actor in fold.test_actors]
    assert sorted(tested) == RAVDESS_ACTORS


def test_paper5_keeps_21_to_24_in_training_and_tests_on_validation():
    folds = make_folds(RAVDESS_ACTORS, "paper5")
    assert len(folds) == 5
    for fold in folds:
        assert fold.val_actors == fold.test_actors and len(fold.test_actors) == 4
        assert {21, 22, 23, 24} <= set(fold.train_actors)
        assert not set(fold.train_actors) & set(fold.test_actors)
        assert set(fold.train_actors) | set(fold.test_actors) == set(RAVDESS_ACTORS)
    assert sorted(actor for fold in folds for actor in fold.test_actors) == list(range(1, 21))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_folds_work_on_few_actors_and_per_clip_input(protocol: str):
    actors = [3, 4, 7, 8, 11, 12]
    per_clip = np.repeat(actors, 8)[::-1]  # repeats and any order, e.g. PreparedDataset.actors
    folds = make_folds(per_clip, protocol)
    assert folds == make_folds(actors, protocol)
    for fold in folds:
        assert len(fold.test_actors) == 1
        assert not set(fold.train_actors) & (set(fold.val_actors) | set(fold.test_actors))
    tested = sorted(actor for fold in folds for actor in fold.test_actors)
    assert tested == (actors if protocol == "6fold" else actors[:5])  # paper5 never tests the last


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_folds_counts_what_config_validation_allows(protocol: str):
    """Run configs check data.fold against FOLDS before any data loads."""
    assert len(make_folds(RAVDESS_ACTORS, protocol)) == FOLDS[protocol]


def test_get_fold_and_errors():
    assert get_fold(RAVDESS_ACTORS, "6fold", 2) == make_folds(RAVDESS_ACTORS)[2]
    with pytest.raises(ValueError, match=r"`0 <= index < 5` must hold for protocol 'paper5', but got index=5"):
        get_fold(RAVDESS_ACTORS, "paper5", 5)
    with pytest.raises(ValueError, match=r"unknown split protocol '10fold'; valid: \['6fold', 'paper5'\]"):
        make_folds(RAVDESS_ACTORS, "10fold")
    with pytest.raises(ValueError, match="number of actors >= 6` must hold .* got 5 actors"):
        make_folds([1, 2, 3, 4, 5])


def test_fold_rows_of_a_prepared_dataset_do_not_share_speakers(prepared_lite: Path):
    ds = PreparedDataset(prepared_lite)
    for fold in make_folds(ds.actors):
        rows = {part: ds.subset(getattr(fold, f"{part}_actors")) for part in ("train", "val", "test")}
        assert sum(len(r) for r in rows.values()) == len(ds)
        assert len(np.unique(np.concatenate(list(rows.values())))) == len(ds)
        assert set(ds.actors[rows["test"]]).isdisjoint(ds.actors[rows["train"]])
