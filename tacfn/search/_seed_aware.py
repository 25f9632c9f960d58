"""The seed-aware searcher: one Optuna trial per configuration, one Tune trial per replicate.

See :class:`SeedAwareOptunaSearch`; the judging is :mod:`._racing`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna

from ._racing import Configuration, Race, Verdict
from ._recording import configuration_hash
from ._searcher import PrunableOptunaSearch
from ._study import TUNE_TRIAL_ID

_STATES: dict[Verdict, optuna.trial.TrialState] = {
    "failed": optuna.trial.TrialState.FAIL,
    "pruned": optuna.trial.TrialState.PRUNED,
    "raced_out": optuna.trial.TrialState.PRUNED,
}


@dataclass
class _Configuration:
    params: dict[str, Any]
    trial: optuna.Trial
    started: dict[int, str] = field(default_factory=dict)  # replicate -> Tune trial id
    reported: int = 0  # replicates whose aggregate Optuna has as an intermediate value
    ended: bool = False


class SeedAwareOptunaSearch(PrunableOptunaSearch):
    """Trains each configuration Optuna proposes on every (seed, fold) replicate, and races it.

    A Tune trial is one replicate: the sampled parameters plus ``train.seed`` and ``data.fold``.
    Replicates of a configuration run one after another, so that one clearly worse than the
    incumbent stops early (:meth:`._racing.Race.verdict`); once ``budget`` configurations have
    started, the replicates left run side by side to keep every slot busy. Optuna holds one
    trial per configuration: after each replicate it gets the aggregate so far as an
    intermediate value (step = replicates in), and at the end COMPLETE with the aggregate, or
    PRUNED (raced out, or a replicate stopped by ASHA) with the partial aggregate as its last
    intermediate value, or FAIL.

    The store is the record: replicates it holds count, once each, and a resumed search never
    starts a replicate the store has (one that ended after Tune's last snapshot of this searcher).
    """

    def __init__(self, *args: Any, race: Race, base: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.race = race
        self.base = base
        self._configurations: dict[str, _Configuration] = {}  # config hash -> configuration, in start order
        self._replicate_of: dict[str, tuple[str, int]] = {}  # Tune trial id -> (config hash, replicate)
        self._ended: dict[str, dict[str, Any]] = {}  # Tune trial id -> its replicate's row, as the store records it

    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]  # see PrunableOptunaSearch
        confs = self.race.configurations(self._rows())  # what asking Optuna below changes nothing of
        config = self._next_replicate(trial_id, confs, side_by_side=False)
        if config is not None:
            return config
        proposed = super().suggest(trial_id)  # FINISHED once `budget` configurations started, or the sampler converged
        if isinstance(proposed, dict):
            key = configuration_hash(self.base, proposed)
            if key not in self._configurations:
                self._configurations[key] = _Configuration(dict(proposed), self._ot_trials[trial_id])
                return self._start(trial_id, key, 0)
            self._drop_proposal(trial_id, self._configurations[key])
        config = self._next_replicate(trial_id, confs, side_by_side=True)
        if config is not None:
            return config
        return None if any(not c.ended for c in self._configurations.values()) else self.FINISHED

    def _drop_proposal(self, trial_id: str, earlier: _Configuration) -> None:
        """A proposal of a configuration this search already has, which PrunableOptunaSearch
        let through (one that failed, whose replicates the store holds, or other parameters
        that make the same run config): told FAIL (which samplers skip), marked
        ``repeat_of``, and not trained."""
        proposal = self._ot_trials.pop(trial_id)
        proposal.set_user_attr("repeat_of", earlier.trial.number)
        self._ot_study.tell(proposal, state=optuna.trial.TrialState.FAIL)

    def _started(self) -> int:
        """Configurations started: this searcher's and those the store recorded (see PrunableOptunaSearch)."""
        recorded = self.race.configurations(self.store.trials().to_pylist())
        return len(set(self._configurations) | set(recorded))

    def _rows(self) -> list[dict[str, Any]]:
        """Every replicate that ended: the store's rows, then those it does not hold yet."""
        rows = self.store.trials().to_pylist()
        recorded = {row["trial_id"] for row in rows}
        return rows + [row for trial_id, row in self._ended.items() if trial_id not in recorded]

    def _next_replicate(self, trial_id: str, confs: dict[str, Configuration], side_by_side: bool) -> dict[str, Any] | None:
        """The next replicate of the first configuration still racing (``confs``: the
        replicates that ended), if it may start now: when its started replicates have all
        ended, or (``side_by_side``) at once."""
        for key, conf in self._configurations.items():
            if conf.ended or self._settle(key, confs):
                continue
            done = set(confs[key].replicates) if key in confs else set()
            waiting = [r for r in range(len(self.race.plan)) if r not in conf.started and r not in done]
            if waiting and (side_by_side or set(conf.started) <= done):
                return self._start(trial_id, key, waiting[0])
        return None

    def _start(self, trial_id: str, key: str, replicate: int) -> dict[str, Any]:
        conf = self._configurations[key]
        conf.started[replicate] = trial_id
        self._replicate_of[trial_id] = (key, replicate)
        seed, fold = self.race.plan[replicate]
        return {**conf.params, "train.seed": seed, "data.fold": fold}

    def _settle(self, key: str, confs: dict[str, Configuration]) -> bool:
        """Report the configuration's aggregate so far to Optuna and, if the replicates in
        decide it, tell Optuna how it ended. Whether it has ended."""
        conf = self._configurations[key]
        if key not in confs:
            return False
        verdict = self.race.verdict(confs, key)
        value = self.race.value(confs[key])
        steps = len(confs[key].replicates)
        if not math.isnan(value) and steps > conf.reported:
            conf.trial.report(value, step=steps)
            conf.reported = steps
        if verdict is None:
            return False
        if verdict == "completed":
            self._ot_study.tell(conf.trial, value, skip_if_finished=True)
        else:
            self._ot_study.tell(conf.trial, state=_STATES[verdict], skip_if_finished=True)
        conf.ended = True
        return True

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot (see PrunableOptunaSearch.restore); a study rebuilt from the
        store holds each configuration's trial under its first replicate's Tune trial id, and one
        the study already holds as ended was told by the driver that died, after the snapshot."""
        super().restore(checkpoint_path)
        running = {t.number for t in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))}
        for conf in self._configurations.values():
            conf.trial = self._ot_trials.get(conf.started[0], conf.trial)
            conf.ended = conf.ended or conf.trial.number not in running  # told by a driver that died after the snapshot

    def _adopt(self, orphan: optuna.trial.FrozenTrial) -> bool:
        """Take up a configuration that started after Tune's snapshot and has replicates in the
        store: its other replicates run as if the driver had never died. One the store does
        not hold (nothing of it ended) is failed, as in a search without replicates."""
        rows = [row for row in self.store.trials().to_pylist() if row.get("replicate") is not None]
        first = next((row for row in rows if row["trial_id"] == orphan.user_attrs.get(TUNE_TRIAL_ID)), None)
        if first is None:
            return False
        key = first["config_hash"]
        trial = optuna.Trial(self._ot_study, orphan._trial_id)  # Optuna's own id of the trial
        started = {int(row["replicate"]): row["trial_id"] for row in rows if row["config_hash"] == key}
        self._configurations[key] = _Configuration(dict(orphan.params), trial, started, max(orphan.intermediate_values, default=0))
        self._ot_trials[first["trial_id"]] = trial
        return True

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Nothing: epochs stay out of the study (see PrunableOptunaSearch)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Record how the replicate ended and settle its configuration."""
        if trial_id in self._completed_trials or trial_id not in self._replicate_of:
            return
        self._completed_trials.add(trial_id)
        key, replicate = self._replicate_of[trial_id]
        self._ended[trial_id] = replicate_outcome(trial_id, key, replicate, result, error, self.race.metric)
        if not self._configurations[key].ended:
            self._settle(key, self.race.configurations(self._rows()))


def replicate_outcome(trial_id: str, key: str, replicate: int, result: dict | None, error: bool, metric: str) -> dict[str, Any]:
    """A replicate's row as the store records it (the columns racing reads), from its last result."""
    result = result or {}
    if error or not result:
        status = "failed"
    elif result.get("status") == "diverged":
        status = "diverged"
    else:
        status = "completed" if result.get("finished") else "pruned"
    return {"trial_id": trial_id, "config_hash": key, "replicate": replicate, "status": status, metric: result.get(f"best_{metric}")}
