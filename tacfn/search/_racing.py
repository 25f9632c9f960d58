"""A seed-aware search's configurations, read from their replicates' rows, and the race between them.

The rows are the results store's (one per replicate, see :mod:`._recording`), or the searcher's
own record of replicates that ended, in the same shape. Both the searcher (what to tell Optuna,
whether to start another replicate) and the store callback (``raced_out``) decide with
:meth:`Race.verdict` on the same rows, so they agree. A replicate counts once: the first row of
each (configuration, replicate) is the one kept, as the store keeps a trial's first record.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..replicates import DIVERGED_SCORE, Aggregate, aggregate, clearly_worse, ended_as, replicate_plan
from ._space_schema import SearchSettings

Verdict = Literal["completed", "failed", "pruned", "raced_out"]


@dataclass
class Configuration:
    """One configuration's replicates so far: replicate index -> its first row."""

    config_hash: str
    replicates: dict[int, dict[str, Any]] = field(default_factory=dict)

    def statuses(self) -> list[str]:
        return [row["status"] for row in self.replicates.values()]

    def scores(self, metric: str) -> dict[int, float]:
        """Each scored replicate's value: its best epoch's ``metric``, or DIVERGED_SCORE if it diverged."""
        out = {}
        for index, row in sorted(self.replicates.items()):
            if row["status"] == "diverged":
                out[index] = DIVERGED_SCORE
            elif row["status"] in ("completed", "pruned") and row.get(metric) is not None:
                out[index] = float(row[metric])
        return out


class Race:
    """How a seed-aware search of ``settings`` judges configurations on their replicates.

    ``base_seed`` and ``base_fold`` stand in for ``search.seeds`` / ``search.folds`` left out.
    """

    def __init__(self, settings: SearchSettings, base_seed: int, base_fold: int) -> None:
        self.plan = replicate_plan(settings.seeds or [base_seed], settings.folds or [base_fold])
        self.metric = settings.metric
        self.how: Aggregate = settings.aggregate
        self.racing = settings.racing

    def replicate_of(self, seed: int, fold: int) -> int:
        """The index of the (seed, fold) replicate in the plan."""
        return self.plan.index((seed, fold))

    def configurations(self, rows: Iterable[dict[str, Any]]) -> dict[str, Configuration]:
        """The configurations of ``rows`` (those with a ``replicate``), in the order first seen."""
        found: dict[str, Configuration] = {}
        for row in rows:
            if row.get("replicate") is None or row.get("status") == "running":
                continue
            conf = found.setdefault(row["config_hash"], Configuration(row["config_hash"]))
            conf.replicates.setdefault(int(row["replicate"]), row)
        return found

    def value(self, conf: Configuration) -> float:
        """The configuration's aggregate over the replicates it has (NaN for none)."""
        return aggregate(list(conf.scores(self.metric).values()), self.how)

    def is_complete(self, conf: Configuration) -> bool:
        """Every planned replicate ran all its epochs, or diverged (a failure on that seed), and not all diverged."""
        return ended_as(conf.statuses(), len(self.plan)) == "completed"

    def incumbent(self, confs: Mapping[str, Configuration], besides: str | None = None) -> Configuration | None:
        """The complete configuration with the best aggregate (the first seen on a tie), other than ``besides``."""
        best, best_value = None, -math.inf
        for conf in confs.values():
            if conf.config_hash != besides and self.is_complete(conf):
                value = self.value(conf)
                if value > best_value:
                    best, best_value = conf, value
        return best

    def verdict(self, confs: Mapping[str, Configuration], config_hash: str) -> Verdict | None:
        """How the configuration ends, from the replicates it has; None while it should go on.

        :func:`tacfn.replicates.ended_as` decides from its replicates' statuses; while that
        leaves it open, it is ``raced_out`` if the racing test finds it worse than the
        incumbent on the replicates both have. A diverged replicate races as DIVERGED_SCORE.
        """
        conf = confs[config_hash]
        ended = ended_as(conf.statuses(), len(self.plan))
        if ended is not None:
            return ended
        incumbent = self.incumbent(confs, besides=config_hash)
        if incumbent is None or self.racing.test == "none":
            return None
        mine, theirs = conf.scores(self.metric), incumbent.scores(self.metric)
        shared = sorted(set(mine) & set(theirs))
        worse = clearly_worse([mine[i] for i in shared], [theirs[i] for i in shared], level=self.racing.level, test=self.racing.test)
        return "raced_out" if worse else None
