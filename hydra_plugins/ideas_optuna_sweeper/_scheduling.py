"""The sweep's trial loop: up to `n_jobs` trials at once, each started as soon as a slot frees up, until a stop.

A trial is asked from the study, gets its epoch budget (the learned early-stop cap) and one job per seed, runs
in a fresh local process or through the configured Hydra launcher (see `_trials`), and is told to the study
when it ends. Trials of dead workers are failed and retried by `_study`; this loop only has it look for them.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import multiprocessing.forkserver
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from typing import Any

import optuna
from hydra.core.singleton import Singleton
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.ideas_optuna_sweeper._records import SweepRecords, WorkerTally
from hydra_plugins.ideas_optuna_sweeper._search_space import format_value
from hydra_plugins.ideas_optuna_sweeper._study import SweepStudy
from hydra_plugins.ideas_optuna_sweeper._trials import LauncherTrial, ProcessTrial, TrialJobs, TrialOutcome, describe
from hydra_plugins.ideas_optuna_sweeper._validation import SweepPlan
from util.mlflow_logger import MlflowRun
from util.trial_reporting import CAPPED_AT_ATTR, ENV_VAR, EPOCH_CAP_ATTR, TrialLink, hold_value_after_success

log = logging.getLogger(__name__)

STOP_FILE = "delete_me_to_stop_hyperopt"
_FAILURE_RATE_MIN_TRIALS = 5  # a failure rate over fewer finished trials says little
_POLL_SECONDS = 1.0  # how often the stop file and the clock are checked while trials run


@dataclass
class _RunningTrial:
    trial: optuna.Trial
    runner: ProcessTrial | LauncherTrial
    run: MlflowRun
    configs: list[DictConfig]
    n_epochs: int
    slot: int
    started: float


@dataclass(frozen=True)
class SweepParts:
    """What the loop runs trials with: Hydra's side (to compose and run jobs) and ours (study, records).

    :param hydra_context: Hydra's context, used to compose each job's config.
    :param task_function: The app's task (train.py's `main`), run inside each trial's process.
    :param config: The composed multirun config (app config plus `hydra`).
    :param launcher: The configured Hydra launcher, or None for our own local processes.
    :param study: The study (storage, budget, heartbeats).
    :param records: Results file, plots, MLflow runs.
    """

    hydra_context: HydraContext
    task_function: TaskFunction
    config: DictConfig
    launcher: Launcher | None
    study: SweepStudy
    records: SweepRecords


class TrialScheduler:
    """Keeps up to `n_jobs` trials running until n_trials, the stop file, the clock or the failure rate stops it.

    The stop file is created on construction: deleting it lets running trials finish and starts no new one.

    :param plan: The checked sweep: settings, the task's keys, search space, pruner arguments.
    :param parts: Hydra's context and launcher, the study and the records.
    :param worker: `<host>:<pid>` of this sweep process.
    """

    def __init__(self, plan: SweepPlan, parts: SweepParts, worker: str) -> None:
        self.settings, self.task, self.space = plan.settings, plan.task, plan.space
        self.pruner_kwargs = plan.pruner_kwargs
        self.parts, self.study, self.records = parts, parts.study, parts.records
        self.worker = worker
        self.stop_file = plan.task.sweep_dir / STOP_FILE
        self.stop_file.touch()
        self.running: dict[int, _RunningTrial] = {}
        self.free_since: dict[int, float] = {}
        self.tally = WorkerTally()
        self.stop_reason: str | None = None
        self.waiting_noted = False
        self.clock_start = time.monotonic()

    # ----- the loop -----

    def run(self) -> str:
        """Run trials until a stop condition holds and every trial of this worker ended; FINISHED or KILLED."""
        context = _process_context()
        if self.parts.launcher is None and context.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()  # its one-off imports are setup, not worker idle time
        self.clock_start = time.monotonic()
        self.free_since = {slot: self.clock_start for slot in range(self.settings.n_jobs)}
        status = "FINISHED"
        try:
            while True:
                self.study.fail_stale_trials(time.monotonic())
                while len(self.running) < self.settings.n_jobs and self._start_trial(context):
                    pass
                if not self.running:
                    if not self._wait_for_other_workers():
                        break
                    time.sleep(_POLL_SECONDS)
                    continue
                by_sentinel = {entry.runner.sentinel: slot for slot, entry in self.running.items()}
                ended = wait(list(by_sentinel), timeout=_POLL_SECONDS)
                for sentinel in ended:
                    self._finish_trial(self.running.pop(by_sentinel[sentinel]))  # type: ignore[index]
                if ended:
                    self.records.write(self.tally)
        except KeyboardInterrupt:
            status = "KILLED"
            log.warning("interrupted: waiting for %d running trial(s) to checkpoint", len(self.running))
            for entry in list(self.running.values()):
                entry.runner.interrupt(timeout=60)
                self._finish_trial(self.running.pop(entry.slot))
            self.records.write(self.tally)
        finally:
            self.study.close()
        return status

    def failure_rate_exceeded(self) -> bool:
        """Whether more than `max_failure_rate` of this worker's finished trials failed (from a few trials on)."""
        return (
            self.tally.finished >= _FAILURE_RATE_MIN_TRIALS
            and self.tally.failed / self.tally.finished > self.settings.max_failure_rate
        )

    def _wait_for_other_workers(self) -> bool:
        """With this worker's trials done and n_trials used up: whether other workers still run trials.

        A worker stays until then (with heartbeats on) so that a trial whose worker dies is retried here. Only
        trials that beat count: one left RUNNING by a sweep without heartbeats could never end the wait.
        """
        if self.study.heartbeat is None or self.stop_reason is not None:
            return False
        others = self.study.beating_trials()
        if others and not self.waiting_noted:
            log.info("waiting for %d trial(s) of other workers, to retry any whose worker dies", others)
            self.waiting_noted = True
        return others > 0

    def _stop(self) -> str | None:
        """Why this worker may start no new trial at all (logged once), or None. See also the study's budget."""
        if self.stop_reason is not None:
            return self.stop_reason
        reason = None
        duration = self.settings.max_duration_minutes
        if not self.stop_file.exists():
            reason = f"{STOP_FILE} was deleted"
        elif duration is not None and time.monotonic() - self.clock_start > duration * 60:
            reason = f"max_duration_minutes={duration} reached"
        elif self.failure_rate_exceeded():
            reason = (
                f"hydra.sweeper.max_failure_rate: {self.tally.failed} of {self.tally.finished} trials failed "
                f"(> {self.settings.max_failure_rate:.0%}); the sweep is stopped"
            )
        if reason is not None:
            self.stop_reason = reason
            log.info("no new trials: %s; waiting for %d running", reason, len(self.running))
        return reason

    # ----- one trial -----

    def _start_trial(self, context: Any) -> bool:
        """Start the next trial in a free slot; False when no trial may start now."""
        if self._stop() is not None:
            return False
        trial = self.study.ask(len(self.running))
        if trial is None:
            return False
        slot = min(set(range(self.settings.n_jobs)) - set(self.running))
        self.study.beat_for(trial)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("heartbeat", self.study.heartbeat is not None)  # other workers wait only for such trials
        n_epochs = self._epoch_cap()
        run = self.records.trial_run(trial, n_epochs)
        try:
            overrides = self._job_overrides(trial, n_epochs)
            configs = self._job_configs(trial, overrides)
        except Exception as error:  # a sampled value the config rejects: this trial fails, the sweep goes on
            self._tell(trial, run, TrialOutcome("FAIL", error=describe(error)), n_epochs)
            return True
        runner: ProcessTrial | LauncherTrial
        parts = self.parts
        if parts.launcher is None:
            state, uri = Singleton.get_state(), self.task.tracking_uri
            jobs = TrialJobs(parts.hydra_context, parts.task_function, state, configs, run.run_id, uri)
            runner = ProcessTrial(context, jobs)
        else:
            first_job = trial.number * len(overrides)
            runner = LauncherTrial(parts.launcher, overrides, first_job, configs, run.run_id, self.task.tracking_uri)
        now = time.monotonic()
        self.tally.idle_seconds += now - self.free_since[slot]
        self.running[slot] = _RunningTrial(trial, runner, run, configs, n_epochs, slot, now)
        log.info("trial %d started (slot %d, %s): %s", trial.number, slot, runner.where, trial.params)
        return True

    def _job_overrides(self, trial: optuna.Trial, n_epochs: int) -> list[list[str]]:
        """One override list per seed: params, epoch cap, seed, the resolved sweep dir and the trial's link."""
        overrides = self.space.overrides(trial.params)
        if n_epochs != self.task.n_epochs:
            overrides.append(f"n_epochs={n_epochs}")
        overrides.append(f"hydra.sweep.dir={format_value(str(self.task.sweep_dir))}")  # resolved once: one dir
        link = TrialLink(
            storage=self.study.url,
            study_name=self.study.name,
            trial_id=self.study.trial_id(trial),
            metric=self.task.metric,
            pruner=self.settings.pruner,
            pruner_kwargs=self.pruner_kwargs,
            learned_cap=self._learns_cap(),
        )
        n_seeds = self.settings.n_seeds_per_trial
        jobs = []
        for index in range(n_seeds):
            seed = [f"seed={self.task.seed + index}"] if n_seeds > 1 else []
            # Through Hydra's env_set the link reaches the job whichever launcher runs it (only seed 0 reports).
            text = replace(link, report=index == 0).to_environ()[ENV_VAR]
            jobs.append([*overrides, *seed, f"++hydra.job.env_set.{ENV_VAR}={format_value(text)}"])
        return jobs

    def _job_configs(self, trial: optuna.Trial, overrides: list[list[str]]) -> list[DictConfig]:
        configs = []
        for index, job_overrides in enumerate(overrides):
            config = self.parts.hydra_context.config_loader.load_sweep_config(self.parts.config, job_overrides)
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = trial.number * len(overrides) + index
            configs.append(config)
        return configs

    def _finish_trial(self, entry: _RunningTrial) -> None:
        outcome = entry.runner.outcome()
        now = time.monotonic()
        self.tally.busy_seconds += now - entry.started
        self.free_since[entry.slot] = now
        self._tell(entry.trial, entry.run, outcome, entry.n_epochs)
        self.records.send_comet_archives(entry.configs)

    def _tell(self, trial: optuna.Trial, run: MlflowRun, outcome: TrialOutcome, n_epochs: int) -> None:
        self.study.stop_beating_for(trial)
        try:
            trial.set_user_attr("env_steps", outcome.env_steps)
        except optuna.exceptions.UpdateFinishedTrialError:  # this worker's heartbeats lapsed: another failed it
            log.warning("trial %d was marked FAIL by another worker (no heartbeat): result dropped", trial.number)
            self.records.trial_taken_over(run)
            return
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("n_epochs", n_epochs)
        if outcome.error:
            trial.set_user_attr("error", outcome.error)
        value = sum(outcome.values) / len(outcome.values) if outcome.state == "COMPLETE" else None
        # The learned cap ends a trial before its n_epochs too (trial attr set by its epoch hook): not a success.
        capped = CAPPED_AT_ATTR in self.study.user_attrs(trial)
        stopped_on_success = outcome.state == "COMPLETE" and not capped and _early_stopped(outcome.epochs, n_epochs)
        if outcome.state == "COMPLETE":
            trial.set_user_attr("seed_values", outcome.values)
            if stopped_on_success:
                hold_value_after_success(self.study.storage, self.study.trial_id(trial), self.task.n_epochs)
            self.study.study.tell(trial, value)
        else:
            self.study.study.tell(trial, state=optuna.trial.TrialState[outcome.state])
        self.tally.finished += 1
        self.tally.failed += outcome.state == "FAIL"
        self.records.trial_told(trial, run, outcome, value)
        shown = f"value {value:.4f}" if value is not None else outcome.error
        log.info("trial %d %s: %s (%d env steps)", trial.number, outcome.state, shown, outcome.env_steps)
        if stopped_on_success and self.settings.learned_early_stop:
            self._learn_epoch_cap(trial.number, outcome.epochs)

    # ----- the learned early-stop cap -----

    def _learns_cap(self) -> bool:
        return self.settings.learned_early_stop and "n_epochs" not in self.space.distributions

    def _epoch_cap(self) -> int:
        cap = self.study.study.user_attrs.get(EPOCH_CAP_ATTR)
        if not self._learns_cap() or cap is None:
            return self.task.n_epochs
        return min(self.task.n_epochs, int(cap))

    def _learn_epoch_cap(self, number: int, epochs: list[int]) -> None:
        """Shrink the epoch cap after a trial whose every seed early-stopped on success after `epochs`."""
        cap = math.ceil(self.settings.early_stop_factor * max(epochs))
        study = self.study.study
        current = study.user_attrs.get(EPOCH_CAP_ATTR)
        if current is None or cap < current:
            study.set_user_attr(EPOCH_CAP_ATTR, cap)
            study.set_user_attr("epoch_cap_trial", number)
            log.info("trial %d early-stopped after %d epochs: trials now get n_epochs <= %d", number, max(epochs), cap)


def _early_stopped(epochs: list[int], n_epochs: int) -> bool:
    """Whether every seed of a completed trial stopped on success before its `n_epochs`."""
    return bool(epochs) and max(epochs) < n_epochs


def _process_context() -> Any:
    """Fresh processes for trials: from a fork server that imported the app once (Linux), else spawned.

    A fork server starts clean (no database connections or threads of this process) and pays the app's heavy
    imports (torch, SB3, MLflow) once instead of once per trial.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context
