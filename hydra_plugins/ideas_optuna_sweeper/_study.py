"""The sweep's optuna study: its storage, creating / joining / resuming it, asking within the budget, heartbeats.

Optuna is used through its public API only: the storage is opened here and kept (never read back from the
study), and a trial's storage-wide id is looked up from its number (`get_trial_id_from_study_id_trial_number`).
The building blocks shared with other workers of the study (lock, heartbeat thread, stale-trial retry, budget)
are in `_shared_study`.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.ideas_optuna_sweeper._shared_study import (
    Heartbeat,
    StudyLock,
    fail_stale_trials,
    open_storage,
    quiet_heartbeat_warnings,
    trials_in_budget,
)
from hydra_plugins.ideas_optuna_sweeper._task import TaskKeys
from hydra_plugins.ideas_optuna_sweeper._validation import SweepPlan
from hydra_plugins.ideas_optuna_sweeper.config import IdeasOptunaSweeperConf
from util.trial_reporting import make_pruner

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def storage_url(settings: IdeasOptunaSweeperConf, task: TaskKeys) -> str:
    """`hydra.sweeper.storage`, or the sqlite file `optuna.db` in the sweep dir."""
    return settings.storage or f"sqlite:///{task.sweep_dir / 'optuna.db'}"


class SweepStudy:
    """The study this worker runs trials of, on a storage that other workers may share.

    :param plan: The checked sweep (settings, sweep dir and default study name, the grid of the grid sampler).

    `on_stale_trial`, when set, is called with the number of each trial of a dead worker this worker marks FAIL.
    """

    def __init__(self, plan: SweepPlan) -> None:
        settings, task, space = plan.settings, plan.task, plan.space
        self.settings = settings
        self.url = storage_url(settings, task)
        self.shown_url = sqlalchemy.engine.make_url(self.url).render_as_string(hide_password=True)
        self.space = space
        self.grid_key = task.search_space_key
        self.on_stale_trial: Callable[[int], None] | None = None
        self.budget_noted = False
        self.stale_checked = -math.inf
        self.heartbeat: Heartbeat | None = None
        self._trial_ids: dict[int, int] = {}
        self.lock = StudyLock(self.url)
        if not self.lock.exact:
            log.warning(
                "storage %s has no cross-worker lock: each worker may start one trial beyond n_trials", self.shown_url
            )
        with self.lock.held():  # concurrent workers create the tables and enqueue the grid once
            s = settings
            self.storage = open_storage(self.url, s.heartbeat_interval, s.grace_period, s.max_retry, self._stale)
            self.study = optuna.create_study(
                storage=self.storage,
                study_name=s.study_name or task.default_study_name,
                sampler=self._sampler(),
                pruner=make_pruner(s.pruner, plan.pruner_kwargs),
                direction=s.direction,
                load_if_exists=True,
            )
            if s.sampler == "grid":
                # Enqueued points rather than optuna's GridSampler, which calls `study.stop()` when the grid is
                # done and so only works inside `study.optimize`.
                grid = space.grid(self.grid_key)
                for values in itertools.product(*grid.values()):
                    self.study.enqueue_trial(dict(zip(grid, values)), skip_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        if s.heartbeat_interval is not None:
            self.heartbeat = Heartbeat(self.storage, s.heartbeat_interval)
        self.finished_before = len(self.study.get_trials(deepcopy=False, states=FINISHED))
        self.limit = settings.n_trials
        if settings.sampler == "grid":
            self.limit = min(self.limit, math.prod(len(v) for v in space.grid(self.grid_key).values()))

    @property
    def name(self) -> str:
        """The study's name."""
        return self.study.study_name

    def _sampler(self) -> optuna.samplers.BaseSampler:
        seed = self.settings.seed
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.settings.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        if self.settings.sampler == "grid":  # the grid is enqueued (see __init__); nothing left to sample
            return optuna.samplers.RandomSampler(seed=seed)
        # Constant liar: other trials still running (here or in another worker) count as bad, so TPE spreads out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """A trial of a dead worker was marked FAIL (and its params enqueued again): say so, pass it on."""
        interval = self.settings.heartbeat_interval or 0
        retried = len(trial.system_attrs.get("retry_history", [])) < self.settings.max_retry
        log.warning(
            "trial %d (worker %s) sent no heartbeat for %ss: marked FAIL%s",
            trial.number,
            trial.user_attrs.get("worker", "?"),
            self.settings.grace_period or 2 * interval,  # optuna's default grace period
            ", its params are retried" if retried else f", not retried (max_retry={self.settings.max_retry})",
        )
        if self.on_stale_trial is not None:
            self.on_stale_trial(trial.number)

    def ask(self, running_here: int) -> optuna.Trial | None:
        """A new trial, or None when the study's trials (all workers' together) use up n_trials.

        Counting and asking happen under the study lock, so concurrent workers never overshoot n_trials.
        """
        with self.lock.held():
            used = trials_in_budget(self.study.get_trials(deepcopy=False))
            if used >= self.limit:
                if not self.budget_noted:
                    log.info("no new trials: %d trials reached in the study; %d running here", used, running_here)
                    self.budget_noted = True
                return None
            self.budget_noted = False  # a stale trial was failed and retried: the budget opened up again
            with quiet_heartbeat_warnings():
                return self.study.ask(fixed_distributions=self.space.distributions)

    def trial_id(self, trial: optuna.Trial) -> int:
        """The storage-wide id of one of this study's trials (what a trial's process reports to)."""
        if trial.number not in self._trial_ids:
            self._trial_ids[trial.number] = self.storage.get_trial_id_from_study_id_trial_number(
                self.study_id, trial.number
            )
        return self._trial_ids[trial.number]

    def user_attrs(self, trial: optuna.Trial) -> dict[str, Any]:
        """A trial's user attributes as stored now (a trial's process may have set some)."""
        return self.storage.get_trial_user_attrs(self.trial_id(trial))

    def beat_for(self, trial: optuna.Trial) -> None:
        """Start recording heartbeats of a trial of this worker (if heartbeats are on)."""
        if self.heartbeat is not None:
            self.heartbeat.add(self.trial_id(trial))

    def stop_beating_for(self, trial: optuna.Trial) -> None:
        """Stop recording heartbeats of a trial (it is about to be told)."""
        if self.heartbeat is not None:
            self.heartbeat.discard(self.trial_id(trial))

    def fail_stale_trials(self, now: float) -> None:
        """Every heartbeat interval: mark trials of dead workers FAIL (and so retry their params)."""
        interval = self.settings.heartbeat_interval
        if interval is not None and now - self.stale_checked >= interval:
            self.stale_checked = now
            fail_stale_trials(self.study)

    def beating_trials(self) -> int:
        """How many RUNNING trials of the study (any worker's) record heartbeats."""
        running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return sum(bool(trial.user_attrs.get("heartbeat")) for trial in running)

    def close(self) -> None:
        """Stop the heartbeat thread and release the lock's connection."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        self.lock.close()
