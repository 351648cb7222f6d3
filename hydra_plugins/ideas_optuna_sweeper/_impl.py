"""The sweep: an optuna study whose trials run asynchronously, each in a fresh process, until a stop condition.

Parent process (this module's :class:`OptunaSweep`): validates the search space, opens (or joins, or resumes)
the study, then keeps up to `n_jobs` trials busy: as soon as one ends, its result is told to the study and the
next trial starts. A trial runs one Hydra job per seed with the task function, in a fresh local process by
default or through the configured Hydra launcher (e.g. submitit on SLURM), see `_trials`; the job reports
per-epoch values to the study through `util.trial_reporting` and may be pruned. A trial that raises, returns
NaN or whose process dies is told FAIL with the reason; the sweep goes on. Several sweeps (workers, on one
machine or many) may share one study: see `_shared_study`.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.ideas_optuna_sweeper._search_space import SearchSpace, format_value, parse_search_space
from hydra_plugins.ideas_optuna_sweeper._shared_study import (
    Heartbeat,
    StudyLock,
    fail_stale_trials,
    open_storage,
    quiet_heartbeat_warnings,
    trials_in_budget,
)
from hydra_plugins.ideas_optuna_sweeper._trials import (
    LauncherTrial,
    ProcessTrial,
    TrialJobs,
    TrialOutcome,
    describe,
    job_run_dir,
)
from hydra_plugins.ideas_optuna_sweeper.config import DIRECTIONS, SAMPLERS, IdeasOptunaSweeperConf
from util.comet_logger import comet_api_key_configured, offline_archives, upload_offline_archive
from util.errors import ConfigError
from util.mlflow_logger import MlflowRun
from util.run_info import flatten, git_short_hash
from util.trial_reporting import (
    CAPPED_AT_ATTR,
    ENV_VAR,
    EPOCH_CAP_ATTR,
    PRUNERS,
    TrialLink,
    hold_value_after_success,
    make_pruner,
)

log = logging.getLogger(__name__)

STOP_FILE = "delete_me_to_stop_hyperopt"
RESULTS_FILE = "optimization_results.yaml"
# The median pruner prunes once this many trials finished (optuna's default is 5, a quarter of a 20-trial sweep
# spent unpruned). A trial that stopped on success holds its value (see _tell), so even one finished trial is a
# full reference curve. README "Hyperparameter sweeps" has the measurement behind the number.
MEDIAN_STARTUP_TRIALS = 1
_FAILURE_RATE_MIN_TRIALS = 5  # a failure rate over fewer finished trials says little
_POLL_SECONDS = 1.0  # how often the stop file and the clock are checked while trials run
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass
class _RunningTrial:
    trial: optuna.Trial
    runner: ProcessTrial | LauncherTrial
    run: MlflowRun
    configs: list[DictConfig]
    n_epochs: int
    slot: int
    started: float


class OptunaSweep:
    """One sweep: validation, the study, the asynchronous trial loop and the records.

    :param settings: `hydra.sweeper` (see :class:`IdeasOptunaSweeperConf`).
    :param hydra_context: Hydra's context, used to compose each job's config.
    :param task_function: The app's task (train.py's `main`), run inside each trial's process.
    :param config: The composed multirun config (app config plus `hydra`).
    """

    def __init__(
        self,
        settings: IdeasOptunaSweeperConf,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.settings = settings
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.pruner_kwargs: dict[str, Any] = dict(OmegaConf.to_container(OmegaConf.create(settings.pruner_kwargs)))
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.base_epochs = int(config.get("n_epochs", 1))
        self.running: dict[int, _RunningTrial] = {}
        self.free_since: dict[int, float] = {}
        self.idle_seconds = 0.0
        self.busy_seconds = 0.0
        self.finished = 0
        self.failed = 0
        self.stop_reason: str | None = None
        self.budget_noted = False
        self.waiting_noted = False
        self.stale_checked = -math.inf
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.launcher: Launcher | None = None
        self.heartbeat: Heartbeat | None = None
        self.plots_noted = False
        self.comet_key: bool | None = None  # looked up once, when the first trial leaves an archive
        self.archives_noted = False

    # ----- validation (before anything is written) -----

    def _validate_settings(self) -> None:
        s = self.settings
        for key in ("n_trials", "n_jobs", "n_seeds_per_trial"):
            if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
                raise ConfigError(f"hydra.sweeper.{key}", f"must be an integer >= 1, got {getattr(s, key)!r}")
        if s.sampler not in SAMPLERS:
            raise ConfigError("hydra.sweeper.sampler", f"unknown sampler {s.sampler!r}", SAMPLERS)
        if s.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
            raise ConfigError("hydra.sweeper.sampler", "cmaes needs the `cmaes` package (pip install cmaes)")
        if s.pruner not in PRUNERS:
            raise ConfigError("hydra.sweeper.pruner", f"unknown pruner {s.pruner!r}", PRUNERS)
        if s.direction not in DIRECTIONS:
            raise ConfigError("hydra.sweeper.direction", f"unknown direction {s.direction!r}", DIRECTIONS)
        if not 0.0 <= s.max_failure_rate <= 1.0:
            raise ConfigError("hydra.sweeper.max_failure_rate", f"must be in [0, 1], got {s.max_failure_rate}")
        if s.max_duration_minutes is not None and s.max_duration_minutes <= 0:
            raise ConfigError("hydra.sweeper.max_duration_minutes", "must be > 0 (or null for no limit)")
        for key in ("heartbeat_interval", "grace_period"):
            value = getattr(s, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"hydra.sweeper.{key}", f"must be an integer >= 1 (seconds) or null, got {value!r}")
        if s.storage is not None:
            try:
                sqlalchemy.engine.make_url(s.storage).get_dialect().import_dbapi()
            except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as error:
                raise ConfigError(
                    "hydra.sweeper.storage",
                    f"cannot use this URL ({type(error).__name__}: {error})",
                    ["sqlite:///<file>", "postgresql+psycopg://<user>@<host>:<port>/<db> (extra: .[cluster])"],
                ) from None
        if not isinstance(s.max_retry, int) or s.max_retry < 0:
            raise ConfigError("hydra.sweeper.max_retry", f"must be an integer >= 0, got {s.max_retry!r}")
        if s.early_stop_factor <= 0:
            raise ConfigError("hydra.sweeper.early_stop_factor", f"must be > 0, got {s.early_stop_factor}")
        if s.pruner == "hyperband":
            self.pruner_kwargs.setdefault("max_resource", self.base_epochs)
        if s.pruner == "median":
            self.pruner_kwargs.setdefault("n_startup_trials", MEDIAN_STARTUP_TRIALS)
        try:
            make_pruner(s.pruner, self.pruner_kwargs)
        except (TypeError, ValueError) as error:
            raise ConfigError("hydra.sweeper.pruner_kwargs", f"rejected by the {s.pruner} pruner: {error}") from None

    def _validate_space(self, arguments: list[str]) -> SearchSpace:
        entries = OmegaConf.to_container(self.config.get("search_space") or OmegaConf.create({}), resolve=False)
        assert isinstance(entries, dict)
        space = parse_search_space({str(k): v for k, v in entries.items()}, arguments)
        for key, distribution in space.distributions.items():
            try:
                self.hydra_context.config_loader.load_sweep_config(
                    self.config, space.overrides({key: _representative(distribution)})
                )
            except Exception as error:  # Hydra's composition errors name the key in a long message
                where = f"search_space.{key}" if key in entries else key
                raise ConfigError(where, str(error).strip().splitlines()[0]) from None
        if self.settings.sampler == "grid":
            space.grid("search_space")
        return space

    # ----- the study -----

    def _storage_url(self) -> str:
        return self.settings.storage or f"sqlite:///{self.sweep_dir / 'optuna.db'}"

    def _storage_shown(self) -> str:
        """The storage URL without its password, for logs, MLflow and the results file."""
        return sqlalchemy.engine.make_url(self._storage_url()).render_as_string(hide_password=True)

    def _study_name(self) -> str:
        if self.settings.study_name:
            return str(self.settings.study_name)
        return f"{self.config.get('env', 'app')}_{OmegaConf.select(self.config, 'algorithm.name', default='run')}"

    def _sampler(self, space: SearchSpace) -> optuna.samplers.BaseSampler:
        seed = self.settings.seed
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.settings.sampler == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed)
        if self.settings.sampler == "grid":  # the grid is enqueued (see _open_study); nothing left to sample
            return optuna.samplers.RandomSampler(seed=seed)
        # Constant liar: other trials still running (here or in another worker) count as bad, so TPE spreads out.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def _open_study(self, space: SearchSpace) -> optuna.Study:
        """Create, join or resume the study, under the study lock (concurrent workers create tables and grid once)."""
        url = self._storage_url()
        self.lock = StudyLock(url)
        if not self.lock.exact:
            log.warning("storage %s has no cross-worker lock: each worker may start one trial beyond n_trials", url)
        with self.lock.held():
            s = self.settings
            self.storage = open_storage(url, s.heartbeat_interval, s.grace_period, s.max_retry, self._on_stale_trial)
            study = optuna.create_study(
                storage=self.storage,
                study_name=self._study_name(),
                sampler=self._sampler(space),
                pruner=make_pruner(self.settings.pruner, self.pruner_kwargs),
                direction=self.settings.direction,
                load_if_exists=True,
            )
            if self.settings.sampler == "grid":
                # Enqueued points rather than optuna's GridSampler, which calls `study.stop()` when the grid is
                # done and so only works inside `study.optimize`.
                grid = space.grid("search_space")
                for values in itertools.product(*grid.values()):
                    study.enqueue_trial(dict(zip(grid, values)), skip_if_exists=True)
        if self.settings.heartbeat_interval is not None:
            self.heartbeat = Heartbeat(self.storage, self.settings.heartbeat_interval)
        return study

    def _on_stale_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """A trial of a dead worker was marked FAIL (and its params enqueued again): say so, close its MLflow run."""
        retried = len(trial.system_attrs.get("retry_history", [])) < self.settings.max_retry
        log.warning(
            "trial %d (worker %s) sent no heartbeat for %ss: marked FAIL%s",
            trial.number,
            trial.user_attrs.get("worker", "?"),
            self.storage.grace_period or 2 * (self.settings.heartbeat_interval or 0),
            ", its params are retried" if retried else f", not retried (max_retry={self.settings.max_retry})",
        )
        self._close_stale_trial_run(study.study_name, trial.number)

    def _close_stale_trial_run(self, study_name: str, number: int) -> None:
        """Mark a dead worker's MLflow run of the trial FAILED, when it is in this worker's tracking store."""
        client = MlflowClient(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            return
        query = (
            f"tags.`sweep/study` = '{study_name}' and tags.`sweep/trial` = '{number}' "
            "and attributes.status = 'RUNNING'"
        )
        for run in client.search_runs([experiment.experiment_id], filter_string=query):
            client.set_tag(run.info.run_id, "sweep/state", "FAIL")
            client.set_tag(run.info.run_id, "sweep/error", "its worker stopped sending heartbeats")
            client.set_terminated(run.info.run_id, "FAILED")

    # ----- the loop -----

    def run(self, arguments: list[str]) -> None:
        """Validate (exit 2 with one line on bad input), then run trials until a stop condition holds."""
        try:
            self._validate_settings()
            self.space = self._validate_space(arguments)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.tracking_uri = OmegaConf.select(self.config, "mlflow.tracking_uri")
        self.experiment_name = str(OmegaConf.select(self.config, "mlflow.experiment_name", default="sweeps"))
        self.study = self._open_study(self.space)
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        self.finished_before = len(self.study.get_trials(deepcopy=False, states=done))
        self.limit = self.settings.n_trials
        if self.settings.sampler == "grid":
            self.limit = min(self.limit, math.prod(len(v) for v in self.space.grid("search_space").values()))
        self.stop_file = self.sweep_dir / STOP_FILE
        self.stop_file.touch()
        if OmegaConf.select(self.config, "hydra.launcher._target_") != _BASIC_LAUNCHER:
            self.launcher = Plugins.instance().instantiate_launcher(
                hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
            )
        self.sweep_run = MlflowRun(
            self.tracking_uri,
            self.experiment_name,
            f"sweep_{self.study.study_name}",
            {
                "sweep_dir": str(self.sweep_dir),
                "study_name": self.study.study_name,
                "optuna_storage": self._storage_shown(),
                "sweep/worker": self.worker,
                "git_commit": git_short_hash(),
                "env": str(self.config.get("env", "")),
                "algorithm": str(OmegaConf.select(self.config, "algorithm.name", default="")),
            },
        )
        settings = {k: v for k, v in vars(self.settings).items() if k != "_target_"}
        self.sweep_run.log_params(flatten({"sweeper": settings, "search_space": self._space_text()}))
        log.info(
            "study %s in %s: %d trials finished before, up to %d in all, %d at once on %s (worker %s); stop: delete %s",
            self.study.study_name,
            self._storage_shown(),
            self.finished_before,
            self.limit,
            self.settings.n_jobs,
            type(self.launcher).__name__ if self.launcher else "local processes",
            self.worker,
            self.stop_file,
        )
        self._loop()

    def _space_text(self) -> dict[str, str]:
        return {key: repr(distribution) for key, distribution in self.space.distributions.items()}

    def _loop(self) -> None:
        context = _process_context()
        if self.launcher is None and context.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()  # its one-off imports are setup, not worker idle time
        self.clock_start = time.monotonic()
        self.free_since = {slot: self.clock_start for slot in range(self.settings.n_jobs)}
        status = "FINISHED"
        try:
            while True:
                self._fail_stale_trials()
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
                    self._write_records()
        except KeyboardInterrupt:
            status = "KILLED"
            log.warning("interrupted: waiting for %d running trial(s) to checkpoint", len(self.running))
            for entry in list(self.running.values()):
                entry.runner.interrupt(timeout=60)
                self._finish_trial(self.running.pop(entry.slot))
            self._write_records()
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.lock.close()
        broken = self._failure_rate_exceeded()
        self._log_summary()
        self.sweep_run.finish("FAILED" if broken else status)
        if status == "KILLED":
            sys.exit(130)
        if broken:
            print(f"error: {self.stop_reason}", file=sys.stderr)
            sys.exit(1)

    def _fail_stale_trials(self) -> None:
        """Every heartbeat interval: mark trials of dead workers FAIL (and so retry their params)."""
        interval = self.settings.heartbeat_interval
        if interval is not None and time.monotonic() - self.stale_checked >= interval:
            self.stale_checked = time.monotonic()
            fail_stale_trials(self.study)

    def _wait_for_other_workers(self) -> bool:
        """With this worker's trials done and n_trials used up: whether other workers still run trials.

        A worker stays until then (with heartbeats on) so that a trial whose worker dies is retried here. Only
        trials that beat count: one left RUNNING by a sweep without heartbeats could never end the wait.
        """
        if self.heartbeat is None or self.stop_reason is not None:
            return False
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        others = sum(bool(trial.user_attrs.get("heartbeat")) for trial in running)
        if others and not self.waiting_noted:
            log.info("waiting for %d trial(s) of other workers, to retry any whose worker dies", others)
            self.waiting_noted = True
        return others > 0

    def _failure_rate_exceeded(self) -> bool:
        return (
            self.finished >= _FAILURE_RATE_MIN_TRIALS
            and self.failed / self.finished > self.settings.max_failure_rate
        )

    def _stop(self) -> str | None:
        """Why this worker may start no new trial at all (logged once), or None. See also `_ask`'s budget."""
        if self.stop_reason is not None:
            return self.stop_reason
        reason = None
        duration = self.settings.max_duration_minutes
        if not self.stop_file.exists():
            reason = f"{STOP_FILE} was deleted"
        elif duration is not None and time.monotonic() - self.clock_start > duration * 60:
            reason = f"max_duration_minutes={duration} reached"
        elif self._failure_rate_exceeded():
            reason = (
                f"hydra.sweeper.max_failure_rate: {self.failed} of {self.finished} trials failed "
                f"(> {self.settings.max_failure_rate:.0%}); the sweep is stopped"
            )
        if reason is not None:
            self.stop_reason = reason
            log.info("no new trials: %s; waiting for %d running", reason, len(self.running))
        return reason

    def _ask(self) -> optuna.Trial | None:
        """A new trial, or None when the study's trials (all workers' together) use up n_trials.

        Counting and asking happen under the study lock, so concurrent workers never overshoot n_trials.
        """
        with self.lock.held():
            used = trials_in_budget(self.study.get_trials(deepcopy=False))
            if used >= self.limit:
                if not self.budget_noted:
                    log.info("no new trials: %d trials reached in the study; %d running here", used, len(self.running))
                    self.budget_noted = True
                return None
            self.budget_noted = False  # a stale trial was failed and retried: the budget opened up again
            with quiet_heartbeat_warnings():
                return self.study.ask(fixed_distributions=self.space.distributions)

    def _learns_cap(self) -> bool:
        return self.settings.learned_early_stop and "n_epochs" not in self.space.distributions

    def _epoch_cap(self) -> int:
        cap = self.study.user_attrs.get(EPOCH_CAP_ATTR)
        if not self._learns_cap() or cap is None:
            return self.base_epochs
        return min(self.base_epochs, int(cap))

    def _job_overrides(self, trial: optuna.Trial, n_epochs: int) -> list[list[str]]:
        """One override list per seed: params, epoch cap, seed, the resolved sweep dir and the trial's link."""
        overrides = self.space.overrides(trial.params)
        if n_epochs != self.base_epochs:
            overrides.append(f"n_epochs={n_epochs}")
        overrides.append(f"hydra.sweep.dir={format_value(str(self.sweep_dir))}")  # resolved once: one dir for all
        link = TrialLink(
            storage=self._storage_url(),
            study_name=self.study.study_name,
            trial_id=trial._trial_id,
            metric=str(self.config.get("early_stop_data_column", "test/success_rate")),
            pruner=self.settings.pruner,
            pruner_kwargs=self.pruner_kwargs,
            learned_cap=self._learns_cap(),
        )
        n_seeds = self.settings.n_seeds_per_trial
        base_seed = int(self.config.get("seed", 0))
        jobs = []
        for index in range(n_seeds):
            seed = [f"seed={base_seed + index}"] if n_seeds > 1 else []
            # Through Hydra's env_set the link reaches the job whichever launcher runs it (only seed 0 reports).
            text = replace(link, report=index == 0).to_environ()[ENV_VAR]
            jobs.append([*overrides, *seed, f"++hydra.job.env_set.{ENV_VAR}={format_value(text)}"])
        return jobs

    def _job_configs(self, trial: optuna.Trial, overrides: list[list[str]]) -> list[DictConfig]:
        configs = []
        for index, job_overrides in enumerate(overrides):
            config = self.hydra_context.config_loader.load_sweep_config(self.config, job_overrides)
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = trial.number * len(overrides) + index
            configs.append(config)
        return configs

    def _start_trial(self, context: Any) -> bool:
        """Start the next trial in a free slot; False when no trial may start now."""
        if self._stop() is not None:
            return False
        trial = self._ask()
        if trial is None:
            return False
        slot = min(set(range(self.settings.n_jobs)) - set(self.running))
        if self.heartbeat is not None:
            self.heartbeat.add(trial._trial_id)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("heartbeat", self.heartbeat is not None)  # other workers wait only for such trials
        n_epochs = self._epoch_cap()
        run = MlflowRun(
            self.tracking_uri,
            self.experiment_name,
            f"trial_{trial.number}",
            {
                "mlflow.parentRunId": self.sweep_run.run_id,
                "sweep/trial": str(trial.number),
                "sweep/study": self.study.study_name,
                "sweep/state": "RUNNING",
                "sweep/worker": self.worker,
            },
        )
        run.log_params({**trial.params, "n_epochs": n_epochs})
        try:
            overrides = self._job_overrides(trial, n_epochs)
            configs = self._job_configs(trial, overrides)
        except Exception as error:  # a sampled value the config rejects: this trial fails, the sweep goes on
            self._tell(trial, run, TrialOutcome("FAIL", error=describe(error)), n_epochs)
            return True
        runner: ProcessTrial | LauncherTrial
        if self.launcher is None:
            jobs = TrialJobs(
                self.hydra_context, self.task_function, Singleton.get_state(), configs, run.run_id, self.tracking_uri
            )
            runner = ProcessTrial(context, jobs)
        else:
            first_job = trial.number * len(overrides)
            runner = LauncherTrial(self.launcher, overrides, first_job, configs, run.run_id, self.tracking_uri)
        now = time.monotonic()
        self.idle_seconds += now - self.free_since[slot]
        self.running[slot] = _RunningTrial(trial, runner, run, configs, n_epochs, slot, now)
        log.info("trial %d started (slot %d, %s): %s", trial.number, slot, runner.where, trial.params)
        return True

    def _finish_trial(self, entry: _RunningTrial) -> None:
        outcome = entry.runner.outcome()
        now = time.monotonic()
        self.busy_seconds += now - entry.started
        self.free_since[entry.slot] = now
        self._tell(entry.trial, entry.run, outcome, entry.n_epochs)
        self._send_comet_archives(entry.configs)

    def _send_comet_archives(self, configs: list[DictConfig]) -> None:
        """Upload a finished trial's offline Comet archives when a key exists; else say once where they are."""
        archives = [archive for config in configs for archive in offline_archives(job_run_dir(config))]
        if not archives:
            return
        if self.comet_key is None:
            self.comet_key = comet_api_key_configured()
        if self.comet_key:
            for archive in archives:
                if not upload_offline_archive(archive):
                    log.warning("Comet upload of %s failed; it stays on disk (send it later: comet upload)", archive)
        elif not self.archives_noted:
            log.info(
                "no Comet API key: each trial's Comet record stays offline in %s/<trial>/comet/*.zip; "
                "send them later with `comet upload <zip>`",
                self.sweep_dir,
            )
            self.archives_noted = True

    def _tell(self, trial: optuna.Trial, run: MlflowRun, outcome: TrialOutcome, n_epochs: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.discard(trial._trial_id)
        try:
            trial.set_user_attr("env_steps", outcome.env_steps)
        except optuna.exceptions.UpdateFinishedTrialError:  # this worker's heartbeats lapsed: another failed it
            log.warning("trial %d was marked FAIL by another worker (no heartbeat): result dropped", trial.number)
            run.set_tags({"sweep/state": "FAIL", "sweep/error": "marked FAIL by another worker (no heartbeat)"})
            run.finish("FAILED")
            return
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("n_epochs", n_epochs)
        if outcome.error:
            trial.set_user_attr("error", outcome.error)
        value = sum(outcome.values) / len(outcome.values) if outcome.state == "COMPLETE" else None
        # The learned cap ends a trial before its n_epochs too (trial attr set by its epoch hook): not a success.
        capped = CAPPED_AT_ATTR in self.study._storage.get_trial(trial._trial_id).user_attrs
        stopped_on_success = outcome.state == "COMPLETE" and not capped and _early_stopped(outcome.epochs, n_epochs)
        if outcome.state == "COMPLETE":
            trial.set_user_attr("seed_values", outcome.values)
            if stopped_on_success:
                hold_value_after_success(self.study._storage, trial._trial_id, self.base_epochs)
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=optuna.trial.TrialState[outcome.state])
        self.finished += 1
        self.failed += outcome.state == "FAIL"
        metrics = {"sweep/env_steps": float(outcome.env_steps)}
        if value is not None:
            metrics["hyperopt/score"] = value
        run.log_metrics(metrics, step=trial.number)
        run.set_tags({"sweep/state": outcome.state, **({"sweep/error": outcome.error} if outcome.error else {})})
        run.finish({"COMPLETE": "FINISHED", "PRUNED": "KILLED"}.get(outcome.state, "FAILED"))
        shown = f"value {value:.4f}" if value is not None else outcome.error
        log.info("trial %d %s: %s (%d env steps)", trial.number, outcome.state, shown, outcome.env_steps)
        if stopped_on_success and self.settings.learned_early_stop:
            self._learn_epoch_cap(trial.number, outcome.epochs)

    def _learn_epoch_cap(self, number: int, epochs: list[int]) -> None:
        """Shrink the epoch cap after a trial whose every seed early-stopped on success after `epochs`."""
        cap = math.ceil(self.settings.early_stop_factor * max(epochs))
        current = self.study.user_attrs.get(EPOCH_CAP_ATTR)
        if current is None or cap < current:
            self.study.set_user_attr(EPOCH_CAP_ATTR, cap)
            self.study.set_user_attr("epoch_cap_trial", number)
            log.info("trial %d early-stopped after %d epochs: trials now get n_epochs <= %d", number, max(epochs), cap)

    # ----- records -----

    def _summary(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for trial in trials:
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
        summary: dict[str, Any] = {
            "study_name": self.study.study_name,
            "storage": self._storage_shown(),
            "direction": self.settings.direction,
            "sampler": self.settings.sampler,
            "pruner": self.settings.pruner,
            "trials": states,
            "env_steps": sum(int(t.user_attrs.get("env_steps", 0)) for t in trials),
            "epoch_cap": self.study.user_attrs.get(EPOCH_CAP_ATTR),
            "worker_idle_fraction": round(self.idle_seconds / max(self.idle_seconds + self.busy_seconds, 1e-9), 4),
        }
        if states.get("COMPLETE"):
            best = self.study.best_trial
            summary.update({"best_trial": best.number, "best_value": best.value, "best_params": best.params})
        return summary

    def _write_records(self) -> None:
        summary = self._summary()
        OmegaConf.save(OmegaConf.create(summary), self.sweep_dir / RESULTS_FILE)
        if "best_value" in summary:
            self.sweep_run.log_metrics({"sweep/best_value": summary["best_value"]}, step=self.finished)
        self._write_plots(summary)

    def _write_plots(self, summary: dict[str, Any]) -> None:
        if importlib.util.find_spec("plotly") is None:
            if not self.plots_noted:
                log.info("no optuna plots: plotly is not installed (pip install plotly)")
                self.plots_noted = True
            return
        from optuna import visualization

        plots = {"optimization_history": visualization.plot_optimization_history}
        if summary.get("trials", {}).get("COMPLETE", 0) >= 2 and self.space.distributions:
            plots["param_importances"] = visualization.plot_param_importances
            plots["parallel_coordinate"] = visualization.plot_parallel_coordinate
        for name, plot in plots.items():
            try:
                figure = plot(self.study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of params that never varied
                log.debug("plot %s skipped: %s", name, error)
                continue
            figure.write_html(self.sweep_dir / f"{name}.html", include_plotlyjs="directory")

    def _log_summary(self) -> None:
        summary = self._summary()
        log.info(
            "sweep done (%s): trials %s, best %s %s, env steps %d, workers idle %.1f%% (%.0f s idle, %.0f s busy)",
            self.stop_reason or "all trials ended",
            summary["trials"],
            summary.get("best_value"),
            summary.get("best_params"),
            summary["env_steps"],
            100 * summary["worker_idle_fraction"],
            self.idle_seconds,
            self.busy_seconds,
        )
        metrics = {"sweep/env_steps": float(summary["env_steps"])}
        metrics["sweep/worker_idle_fraction"] = summary["worker_idle_fraction"]
        self.sweep_run.log_metrics(metrics, step=self.finished)


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


def _representative(distribution: optuna.distributions.BaseDistribution) -> Any:
    """A value inside the distribution, to check before the sweep that the config accepts the key."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low  # type: ignore[attr-defined]
