"""The sweep: an optuna study whose trials run asynchronously, each in a fresh process, until a stop condition.

Parent process (this module's :class:`OptunaSweep`): validates the search space, opens (or resumes) the study,
then keeps up to `n_jobs` trial processes busy: as soon as one ends, its result is told to the study and the
next trial starts. A trial's process (:func:`run_trial_process`) runs one Hydra job per seed with the task
function; the job reports per-epoch values to the study through `util.trial_reporting` and may be pruned.
A trial that raises, returns NaN or whose process dies is told FAIL with the reason; the sweep goes on.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import cloudpickle
import optuna
from hydra.core.singleton import Singleton
from hydra.core.utils import run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.ideas_optuna_sweeper._search_space import SearchSpace, parse_search_space
from hydra_plugins.ideas_optuna_sweeper.config import DIRECTIONS, SAMPLERS, IdeasOptunaSweeperConf
from util.comet_logger import comet_api_key_configured, offline_archives, upload_offline_archive
from util.errors import ConfigError
from util.mlflow_logger import MlflowRun
from util.run_info import flatten, git_short_hash
from util.trial_reporting import PRUNERS, TrialLink, TrialPruned, make_pruner

log = logging.getLogger(__name__)

STOP_FILE = "delete_me_to_stop_hyperopt"
RESULTS_FILE = "optimization_results.yaml"
EPOCH_CAP_ATTR = "epoch_cap"
_FAILURE_RATE_MIN_TRIALS = 5  # a failure rate over fewer finished trials says little
_POLL_SECONDS = 1.0  # how often the stop file and the clock are checked while trials run
_ERROR_CHARS = 2000


@dataclass
class TrialOutcome:
    """What a trial's process sends back: final state, per-seed values and epochs, env steps, error text."""

    state: str  # COMPLETE, PRUNED or FAIL
    values: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    env_steps: int = 0
    error: str | None = None


@dataclass
class TrialJobs:
    """The payload of a trial's process: how to run the task and one composed job config per seed."""

    hydra_context: HydraContext
    task_function: TaskFunction
    singleton_state: dict[Any, Any]
    configs: list[DictConfig]
    link: TrialLink
    trial_run_id: str
    tracking_uri: str | None


def training_runs(client: MlflowClient, experiment_name: str, run_dir: Path) -> list[Run]:
    """The MLflow runs a training wrote for `run_dir` (tag `run_dir`, set by train)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.run_dir = '{run_dir.resolve()}'")


def _run_dir(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))


def _mark_training_runs(client: MlflowClient, config: DictConfig, parent_run_id: str, state: str) -> list[Run]:
    """Nest a job's training runs under the trial's run, tag them with the trial state; returns them."""
    runs = training_runs(client, str(config.mlflow.experiment_name), _run_dir(config))
    for run in runs:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
        client.set_tag(run.info.run_id, "sweep/state", state)
        if state == "PRUNED" or run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED" if state == "PRUNED" else "FAILED")
    return runs


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:_ERROR_CHARS]


def _run_trial(jobs: TrialJobs) -> TrialOutcome:
    setup_globals()
    Singleton.set_state(jobs.singleton_state)
    client = MlflowClient(jobs.tracking_uri)
    outcome = TrialOutcome("COMPLETE")
    for index, config in enumerate(jobs.configs):
        os.environ.update(replace(jobs.link, report=index == 0).to_environ())
        error: str | None = None
        value = math.nan
        pruned = False
        try:
            result = run_job(
                hydra_context=jobs.hydra_context,
                task_function=jobs.task_function,
                config=config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            value = float(result.return_value)
        except TrialPruned as stop:
            pruned, error = True, str(stop)
        except SystemExit as stop:
            error = f"the job exited with code {stop.code}"
        except Exception as failure:  # the job's own error, re-raised by JobReturn.return_value
            error = _describe(failure)
        if error is None and not math.isfinite(value):
            error = f"the objective is {value}"
        state = "PRUNED" if pruned else "FAIL" if error is not None else "COMPLETE"
        for run in _mark_training_runs(client, config, jobs.trial_run_id, state):
            metrics = client.get_run(run.info.run_id).data.metrics
            outcome.epochs.append(int(metrics.get("time/epoch", 0)))
            outcome.env_steps += int(metrics.get("time/total_timesteps", 0))
        if error is not None:
            outcome.state, outcome.error = state, error
            return outcome
        outcome.values.append(value)
    return outcome


def run_trial_process(payload: bytes, connection: Connection) -> None:
    """Entry point of a trial's process: run its jobs (one per seed) and send back a :class:`TrialOutcome`."""
    jobs: TrialJobs = cloudpickle.loads(payload)
    connection.send(_run_trial(jobs))
    connection.close()


@dataclass
class _RunningTrial:
    trial: optuna.Trial
    process: BaseProcess
    connection: Connection
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
        self.started = 0
        self.stop_reason: str | None = None
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
        if s.early_stop_factor <= 0:
            raise ConfigError("hydra.sweeper.early_stop_factor", f"must be > 0, got {s.early_stop_factor}")
        if s.pruner == "hyperband":
            self.pruner_kwargs.setdefault("max_resource", self.base_epochs)
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
        return optuna.samplers.TPESampler(seed=seed, constant_liar=self.settings.n_jobs > 1)

    def _open_study(self, space: SearchSpace) -> optuna.Study:
        url = self._storage_url()
        storage: Any = url
        if url.startswith("sqlite:"):
            storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
        study = optuna.create_study(
            storage=storage,
            study_name=self._study_name(),
            sampler=self._sampler(space),
            pruner=make_pruner(self.settings.pruner, self.pruner_kwargs),
            direction=self.settings.direction,
            load_if_exists=True,
        )
        if self.settings.sampler == "grid":
            # Enqueued points rather than optuna's GridSampler, which calls `study.stop()` when the grid is done
            # and so only works inside `study.optimize`.
            grid = space.grid("search_space")
            for values in itertools.product(*grid.values()):
                study.enqueue_trial(dict(zip(grid, values)), skip_if_exists=True)
        return study

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
        self.study = self._open_study(self.space)
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        self.finished_before = len(self.study.get_trials(deepcopy=False, states=done))
        self.limit = self.settings.n_trials
        if self.settings.sampler == "grid":
            self.limit = min(self.limit, math.prod(len(v) for v in self.space.grid("search_space").values()))
        self.stop_file = self.sweep_dir / STOP_FILE
        self.stop_file.touch()
        self.tracking_uri = OmegaConf.select(self.config, "mlflow.tracking_uri")
        self.experiment_name = str(OmegaConf.select(self.config, "mlflow.experiment_name", default="sweeps"))
        self.sweep_run = MlflowRun(
            self.tracking_uri,
            self.experiment_name,
            f"sweep_{self.study.study_name}",
            {
                "sweep_dir": str(self.sweep_dir),
                "study_name": self.study.study_name,
                "optuna_storage": self._storage_url(),
                "git_commit": git_short_hash(),
                "env": str(self.config.get("env", "")),
                "algorithm": str(OmegaConf.select(self.config, "algorithm.name", default="")),
            },
        )
        settings = {k: v for k, v in vars(self.settings).items() if k != "_target_"}
        self.sweep_run.log_params(flatten({"sweeper": settings, "search_space": self._space_text()}))
        log.info(
            "study %s in %s: %d trials finished before, up to %d in all, %d at once; stop: delete %s",
            self.study.study_name,
            self._storage_url(),
            self.finished_before,
            self.limit,
            self.settings.n_jobs,
            self.stop_file,
        )
        self._loop()

    def _space_text(self) -> dict[str, str]:
        return {key: repr(distribution) for key, distribution in self.space.distributions.items()}

    def _loop(self) -> None:
        context = _process_context()
        if context.get_start_method() == "forkserver":
            multiprocessing.forkserver.ensure_running()  # its one-off imports are setup, not worker idle time
        self.clock_start = time.monotonic()
        self.free_since = {slot: self.clock_start for slot in range(self.settings.n_jobs)}
        status = "FINISHED"
        try:
            while True:
                while self._stop() is None and len(self.running) < self.settings.n_jobs:
                    self._start_trial(context)
                if not self.running:
                    break
                by_sentinel = {entry.process.sentinel: slot for slot, entry in self.running.items()}
                ended = wait(list(by_sentinel), timeout=_POLL_SECONDS)
                for sentinel in ended:
                    self._finish_trial(self.running.pop(by_sentinel[sentinel]))  # type: ignore[index]
                if ended:
                    self._write_records()
        except KeyboardInterrupt:
            status = "KILLED"
            log.warning("interrupted: waiting for %d running trial(s) to checkpoint", len(self.running))
            for entry in list(self.running.values()):
                entry.process.join(timeout=60)
                if entry.process.is_alive():
                    entry.process.kill()
                    entry.process.join()
                self._finish_trial(self.running.pop(entry.slot))
            self._write_records()
        broken = self._failure_rate_exceeded()
        self._log_summary()
        self.sweep_run.finish("FAILED" if broken else status)
        if status == "KILLED":
            sys.exit(130)
        if broken:
            print(f"error: {self.stop_reason}", file=sys.stderr)
            sys.exit(1)

    def _failure_rate_exceeded(self) -> bool:
        return (
            self.finished >= _FAILURE_RATE_MIN_TRIALS
            and self.failed / self.finished > self.settings.max_failure_rate
        )

    def _stop(self) -> str | None:
        """Why no new trial may start (logged once), or None."""
        if self.stop_reason is not None:
            return self.stop_reason
        reason = None
        duration = self.settings.max_duration_minutes
        if self.finished_before + self.started >= self.limit:
            reason = f"{self.limit} trials reached"
        elif not self.stop_file.exists():
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

    def _epoch_cap(self) -> int:
        cap = self.study.user_attrs.get(EPOCH_CAP_ATTR)
        if not self.settings.learned_early_stop or cap is None or "n_epochs" in self.space.distributions:
            return self.base_epochs
        return min(self.base_epochs, int(cap))

    def _job_configs(self, trial: optuna.Trial, n_epochs: int) -> list[DictConfig]:
        overrides = self.space.overrides(trial.params)
        if n_epochs != self.base_epochs:
            overrides.append(f"n_epochs={n_epochs}")
        n_seeds = self.settings.n_seeds_per_trial
        base_seed = int(self.config.get("seed", 0))
        configs = []
        for index in range(n_seeds):
            seed = [f"seed={base_seed + index}"] if n_seeds > 1 else []
            config = self.hydra_context.config_loader.load_sweep_config(self.config, [*overrides, *seed])
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = trial.number * n_seeds + index
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.sweep.dir = str(self.sweep_dir)  # resolved once: every job in the same dir
            configs.append(config)
        return configs

    def _start_trial(self, context: Any) -> None:
        slot = min(set(range(self.settings.n_jobs)) - set(self.running))
        trial = self.study.ask(fixed_distributions=self.space.distributions)
        self.started += 1
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
            },
        )
        run.log_params({**trial.params, "n_epochs": n_epochs})
        try:
            configs = self._job_configs(trial, n_epochs)
        except Exception as error:  # a sampled value the config rejects: this trial fails, the sweep goes on
            self._tell(trial, run, TrialOutcome("FAIL", error=_describe(error)), n_epochs)
            return
        link = TrialLink(
            storage=self._storage_url(),
            study_name=self.study.study_name,
            trial_id=trial._trial_id,
            metric=str(self.config.get("early_stop_data_column", "test/success_rate")),
            pruner=self.settings.pruner,
            pruner_kwargs=self.pruner_kwargs,
        )
        jobs = TrialJobs(
            self.hydra_context, self.task_function, Singleton.get_state(), configs, link, run.run_id, self.tracking_uri
        )
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(target=run_trial_process, args=(cloudpickle.dumps(jobs), sender), daemon=False)
        process.start()
        sender.close()
        now = time.monotonic()
        self.idle_seconds += now - self.free_since[slot]
        self.running[slot] = _RunningTrial(trial, process, receiver, run, configs, n_epochs, slot, now)
        log.info("trial %d started (slot %d, pid %s): %s", trial.number, slot, process.pid, trial.params)

    def _finish_trial(self, entry: _RunningTrial) -> None:
        entry.process.join()
        now = time.monotonic()
        self.busy_seconds += now - entry.started
        self.free_since[entry.slot] = now
        outcome: TrialOutcome | None = None
        if entry.connection.poll():
            try:
                outcome = entry.connection.recv()
            except (EOFError, OSError):
                outcome = None
        entry.connection.close()
        if outcome is None:
            code = entry.process.exitcode or 0
            cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            outcome = TrialOutcome("FAIL", error=f"the trial's process died ({cause})")
            for config in entry.configs:
                _mark_training_runs(entry.run.client, config, entry.run.run_id, "FAIL")
        self._tell(entry.trial, entry.run, outcome, entry.n_epochs)
        self._send_comet_archives(entry.configs)

    def _send_comet_archives(self, configs: list[DictConfig]) -> None:
        """Upload a finished trial's offline Comet archives when a key exists; else say once where they are."""
        archives = [archive for config in configs for archive in offline_archives(_run_dir(config))]
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
        trial.set_user_attr("env_steps", outcome.env_steps)
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("n_epochs", n_epochs)
        if outcome.error:
            trial.set_user_attr("error", outcome.error)
        value = sum(outcome.values) / len(outcome.values) if outcome.state == "COMPLETE" else None
        if outcome.state == "COMPLETE":
            trial.set_user_attr("seed_values", outcome.values)
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
        if outcome.state == "COMPLETE":
            self._learn_epoch_cap(trial.number, outcome.epochs, n_epochs)

    def _learn_epoch_cap(self, number: int, epochs: list[int], n_epochs: int) -> None:
        """Shrink the epoch cap when every seed of this trial early-stopped on success before `n_epochs`."""
        if not self.settings.learned_early_stop or not epochs or max(epochs) >= n_epochs:
            return
        cap = math.ceil(self.settings.early_stop_factor * max(epochs))
        current = self.study.user_attrs.get(EPOCH_CAP_ATTR)
        if current is None or cap < current:
            self.study.set_user_attr(EPOCH_CAP_ATTR, cap)
            self.study.set_user_attr("epoch_cap_trial", number)
            log.info("trial %d early-stopped after %d epochs: new trials get n_epochs <= %d", number, max(epochs), cap)

    # ----- records -----

    def _summary(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for trial in trials:
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
        summary: dict[str, Any] = {
            "study_name": self.study.study_name,
            "storage": self._storage_url(),
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
        self.sweep_run.log_metrics(
            {"sweep/env_steps": float(summary["env_steps"]), "sweep/worker_idle_fraction": summary["worker_idle_fraction"]},
            step=self.finished,
        )


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
