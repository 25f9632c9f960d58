"""The search algorithm: Ray Tune's OptunaSearch, told the truth about how each trial ended.

See :class:`PrunableOptunaSearch`. Its study lives in the search's Optuna file (see
:mod:`._study`).
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from ..store import ExperimentStore
from ._study import REBUILT, TUNE_TRIAL_ID

CONVERGED = "converged"  # the study's user attribute: the sampler proposed only configurations already run


class PrunableOptunaSearch(OptunaSearch):
    """OptunaSearch that tells Optuna the truth about trials that did not run to the end,
    and does not train a configuration twice.

    Ray's OptunaSearch records a trial stopped by ASHA as COMPLETE with its truncated score,
    which misleads the sampler. A trial's last result says whether it ran all its epochs
    (``finished``) and how it ended (``status``): unfinished trials are PRUNED, diverged
    ones FAILED, and finished ones COMPLETE with the best validation epoch's score (the
    epoch model selection keeps), where Ray would tell the last epoch's.

    On a discrete space a sampler (TPE above all) proposes the best configurations again and
    again; training is seeded, so a repeat would only reproduce a known result. A proposal
    equal to a finished trial's is told that trial's outcome at once (Optuna's recipe for
    duplicated samples, marked with the user attribute ``repeat_of``) and Optuna is asked again;
    one equal to a running trial's is told FAIL (its outcome is not known yet), which samplers
    skip, and Optuna is asked again. After ``MAX_REPEATS`` repeats in a row the sampler has
    converged on what it knows: if one of them repeated a running trial, the search waits
    (starts nothing) until a trial ends, for that trial may fail and be proposed again;
    otherwise the search creates no more trials (the study's user attribute ``converged``
    turns true) and ends when the running ones do.

    It starts ``budget`` trials in all, counting those a resumed Tune lost but ``store``
    recorded (see :meth:`_started`). Each Optuna trial it starts carries its Tune trial id
    (the store's ``trial_id``) as the user attribute ``tune_trial_id``: a study rebuilt from
    the store is matched to Tune's snapshot by it (see :meth:`restore`).
    """

    MAX_REPEATS = 20
    # OptunaSearch creates its study before Tune asks for a trial.
    _ot_study: optuna.Study  # type: ignore[assignment]  # ray: OptunaSearch leaves it unannotated, so `= None` types it None

    def __init__(self, *args: Any, budget: int, store: ExperimentStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget
        self.store = store
        self._converged = False
        self._waiting_at: int | None = None  # trials ended when every proposal last repeated one, one of them running

    def suggest(self, trial_id: str) -> dict | str | None:  # type: ignore[override]  # ray: annotated Optional[Dict], but may return FINISHED, a str
        if self._converged or self._started() >= self.budget:
            return self.FINISHED
        if self._waiting_at == len(self._completed_trials):  # asking before a trial ends would repeat the same proposals
            return None
        repeated_a_running_trial = False
        for _ in range(self.MAX_REPEATS):
            config = super().suggest(trial_id)
            earlier = self._same_as(self._ot_trials[trial_id]) if isinstance(config, dict) else None
            if earlier is None:
                if isinstance(config, dict):
                    self._ot_trials[trial_id].set_user_attr(TUNE_TRIAL_ID, trial_id)
                return config
            repeat = self._ot_trials.pop(trial_id)
            repeat.set_user_attr("repeat_of", earlier.number)
            if earlier.state == optuna.trial.TrialState.COMPLETE:
                self._ot_study.tell(repeat, earlier.values if len(earlier.values) > 1 else earlier.value)
            elif earlier.state == optuna.trial.TrialState.RUNNING:  # its outcome is not known yet
                self._ot_study.tell(repeat, state=optuna.trial.TrialState.FAIL)
                repeated_a_running_trial = True
            else:
                self._ot_study.tell(repeat, state=earlier.state)
        if repeated_a_running_trial:
            self._waiting_at = len(self._completed_trials)
            return None
        self._converged = True
        self._ot_study.set_user_attr(CONVERGED, True)
        return self.FINISHED

    def _started(self) -> int:
        """The trials this search has started: those Tune knows and those the store recorded.

        After a resume, Tune knows the trials of its last snapshot of the experiment; a
        trial that started and ended after it is in the store and counts against the
        budget, so the resumed search does not replace it.
        """
        return len(set(self._ot_trials) | set(self.store.trials().column("trial_id").to_pylist()))

    def _same_as(self, proposal: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The first trial that completed, was pruned or is running with exactly ``proposal``'s parameters.

        Failed trials do not count: a crash (a lost node, say) says nothing of the config.
        A running one does: with several trials at a time, TPE proposes the configuration a
        running trial trains (seen: 9 trials covered 7 of an 8-point grid at concurrency 2).
        """
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        for trial in self._ot_study.get_trials(deepcopy=False, states=states):
            if trial.number != proposal.number and trial.params == proposal.params and "repeat_of" not in trial.user_attrs:
                return trial
        return None

    def restore(self, checkpoint_path: str) -> None:
        """Restore Tune's snapshot of the searcher, then fail the study's orphaned trials.

        An Optuna trial the driver created after that snapshot, still running when the
        driver died, belongs to no Tune trial: the resumed search never reruns or tells it,
        so it would read as running forever in ``optuna.load_study`` and optuna-dashboard.
        It is marked FAIL, as Optuna's own ``fail_stale_trials`` marks a trial whose process
        died, and the resumed search starts another in its place. The snapshot's trials stay
        as they are: Tune reruns those that were unfinished and tells their outcome.

        A study rebuilt from the store (``._study.recover_study``) replaced the file the
        snapshot's trials live in: they are found again in it first (see :meth:`_rebind`).
        """
        super().restore(checkpoint_path)
        self._waiting_at, self._converged = None, False  # the snapshot's running trials rerun, and may fail: ask Optuna afresh
        assert self._storage is not None  # the search always keeps its study in the Optuna file
        study = optuna.load_study(study_name=self._study_name, storage=self._storage, sampler=self._ot_study.sampler)
        if REBUILT in study.user_attrs:
            self._rebind(study)
        known = {trial.number for trial in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for orphan in running:
            if orphan.number not in known and not self._adopt(orphan):
                self._ot_study.tell(orphan.number, state=optuna.trial.TrialState.FAIL)

    def _adopt(self, orphan: optuna.trial.FrozenTrial) -> bool:
        """Whether to take up ``orphan`` (see :meth:`restore`) rather than fail it: never here."""
        return False

    def _rebind(self, study: optuna.Study) -> None:
        """Point the restored searcher at ``study``, rebuilt from the store.

        Each trial of Tune's snapshot becomes the study's trial with its Tune trial id. One
        the store never recorded (it was running when the driver died) becomes a new running
        trial with the same parameters, which Tune reruns and tells; if Tune had seen it
        end, a failed one, for its outcome is lost. The sampler stays the snapshot's.
        """
        tagged = {t.user_attrs[TUNE_TRIAL_ID]: t for t in study.get_trials(deepcopy=False) if TUNE_TRIAL_ID in t.user_attrs}
        rebound: dict[str, optuna.Trial] = {}
        for trial_id, old in self._ot_trials.items():
            if trial_id in tagged:
                rebound[trial_id] = optuna.Trial(study, tagged[trial_id]._trial_id)  # Optuna's own id of the trial
                continue
            study.enqueue_trial(old.params, user_attrs={TUNE_TRIAL_ID: trial_id})
            rebound[trial_id] = study.ask(old.distributions)
            if trial_id in self._completed_trials:
                study.tell(rebound[trial_id], state=optuna.trial.TrialState.FAIL)
        self._ot_study, self._ot_trials = study, rebound

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Nothing: per-epoch values stay out of the study. ASHA stops trials, not an Optuna
        pruner, and the store keeps every epoch; each value would cost the driver a SQLite
        commit per epoch of every trial."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell Optuna how the trial ended.

        A resumed search may rerun a trial whose outcome Optuna's file got just before the
        driver died, after Tune's last snapshot: Optuna keeps that first outcome
        (``skip_if_finished``), as the store keeps the first record.
        """
        if error or not result or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        state = None
        if result.get("status") == "diverged":
            state = optuna.trial.TrialState.FAIL
        elif not result.get("finished"):
            state = optuna.trial.TrialState.PRUNED
        ot_trial = self._ot_trials[trial_id]
        if state is None:  # ran every epoch: its value is the best validation epoch's, not the last's
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            score = result[f"best_{metrics[0]}"]
            values = [score, *(result[m] for m in metrics[1:])]
            self._ot_study.tell(ot_trial, values if len(values) > 1 else values[0], skip_if_finished=True)
        else:
            self._ot_study.tell(ot_trial, state=state, skip_if_finished=True)
        self._completed_trials.add(trial_id)
