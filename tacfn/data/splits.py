"""Speaker-independent folds: every actor's clips fall in exactly one of train/val/test.

Two protocols, by name:

- ``"6fold"`` (the default): the sorted actors are cut into 6 consecutive groups (4 actors
  each for RAVDESS's 24, so each group holds 2 male and 2 female actors). Fold ``k`` tests
  on group ``k``, validates on group ``(k + 1) % 6`` and trains on the other 4 groups.
  Hyperparameters and the best epoch are chosen on validation actors that are never the
  test actors, so the test score is an honest estimate.
- ``"paper5"``: the TACFN paper's protocol, for comparison only. Actors 21-24 (in general
  the last sixth of the sorted actors) are always in training; actors 1-20 are cut into
  5 groups of 4, and fold ``k`` holds out group ``k`` as both validation and test, so the
  best epoch is picked on the test actors. Its scores are OPTIMISTIC: model selection sees
  the test fold, and 4 actors are never tested.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

FOLDS = {"6fold": 6, "paper5": 5}  # protocol -> its number of folds
PROTOCOLS = tuple(FOLDS)
MIN_ACTORS = 6


@dataclass(frozen=True)
class Fold:
    """The actors of each part of one fold."""

    index: int
    train_actors: tuple[int, ...]
    val_actors: tuple[int, ...]
    test_actors: tuple[int, ...]


def make_folds(actors: Iterable[int], protocol: str = "6fold") -> list[Fold]:
    """The folds of ``protocol`` over ``actors`` (repeats are fine: pass per-clip actors)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    unique = sorted({int(actor) for actor in actors})
    if len(unique) < MIN_ACTORS:
        raise ValueError(
            f"`number of actors >= {MIN_ACTORS}` must hold for protocol {protocol!r} "
            f"(one actor per group at least), but got {len(unique)} actors: {unique}"
        )
    if protocol == "6fold":
        groups = _groups(unique, 6)
        return [
            Fold(
                index=k,
                train_actors=_join(g for j, g in enumerate(groups) if j not in (k, (k + 1) % 6)),
                val_actors=groups[(k + 1) % 6],
                test_actors=groups[k],
            )
            for k in range(6)
        ]
    always_train = unique[len(unique) - len(unique) // 6 :]
    groups = _groups(unique[: len(unique) - len(always_train)], 5)
    return [
        Fold(
            index=k,
            train_actors=_join([*(g for j, g in enumerate(groups) if j != k), tuple(always_train)]),
            val_actors=groups[k],
            test_actors=groups[k],
        )
        for k in range(5)
    ]


def get_fold(actors: Iterable[int], protocol: str, index: int) -> Fold:
    """Fold ``index`` of ``protocol`` over ``actors``."""
    folds = make_folds(actors, protocol)
    if not 0 <= index < len(folds):
        raise ValueError(
            f"`0 <= index < {len(folds)}` must hold for protocol {protocol!r}, but got index={index}"
        )
    return folds[index]


def _groups(actors: list[int], count: int) -> list[tuple[int, ...]]:
    """``actors`` (sorted) cut into ``count`` consecutive groups of near-equal size."""
    return [tuple(int(actor) for actor in group) for group in np.array_split(np.array(actors), count)]


def _join(groups: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    return tuple(sorted(actor for group in groups for actor in group))
