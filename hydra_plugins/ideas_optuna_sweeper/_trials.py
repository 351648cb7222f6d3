"""Running one trial: its jobs (one per seed) in a fresh local process, or through the configured Hydra launcher.

Either way the trial ends in a :class:`TrialOutcome`, collected by :func:`collect_outcome` from the jobs' return
values and the MLflow runs they wrote. Both runners offer the same three things to the sweep's loop: `sentinel`
(ready for `multiprocessing.connection.wait` once the trial has ended), `outcome()` and `interrupt()`.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import select
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.singleton import Singleton
from hydra.core.utils import run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from util.trial_reporting import TrialPruned

_ERROR_CHARS = 2000


@dataclass
class TrialOutcome:
    """What a trial ended with: final state, per-seed values and epochs, env steps, error text."""

    state: str  # COMPLETE, PRUNED or FAIL
    values: list[float] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    env_steps: int = 0
    error: str | None = None


def training_runs(client: MlflowClient, experiment_name: str, run_dir: Path) -> list[Run]:
    """The MLflow runs a training wrote for `run_dir` (tag `run_dir`, set by train)."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.run_dir = '{run_dir.resolve()}'")


def job_run_dir(config: DictConfig) -> Path:
    """The run directory of one of the sweep's jobs: `<sweep dir>/<subdir>`."""
    return Path(str(config.hydra.sweep.dir)) / str(OmegaConf.select(config, "hydra.sweep.subdir"))


def mark_training_runs(client: MlflowClient, config: DictConfig, parent_run_id: str, state: str) -> list[Run]:
    """Nest a job's training runs under the trial's run, tag them with the trial state; returns them."""
    runs = training_runs(client, str(config.mlflow.experiment_name), job_run_dir(config))
    for run in runs:
        client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
        client.set_tag(run.info.run_id, "sweep/state", state)
        if state == "PRUNED" or run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED" if state == "PRUNED" else "FAILED")
    return runs


def describe(error: BaseException) -> str:
    """An exception as one short line of text for the study and MLflow."""
    return f"{type(error).__name__}: {error}"[:_ERROR_CHARS]


def collect_outcome(
    client: MlflowClient, configs: Sequence[DictConfig], trial_run_id: str, results: Iterable[Callable[[], Any]]
) -> TrialOutcome:
    """Judge a trial's jobs in seed order: each `results` item returns the job's objective or raises its error.

    The first job that raises, is pruned, exits or returns a non-finite value decides the trial (later seeds are
    not asked); the jobs' MLflow runs are nested under the trial's run and give epochs and env steps.
    """
    outcome = TrialOutcome("COMPLETE")
    for config, result in zip(configs, results):
        error: str | None = None
        value = math.nan
        pruned = False
        try:
            value = float(result())
        except TrialPruned as stop:
            pruned, error = True, str(stop)
        except SystemExit as stop:
            error = f"the job exited with code {stop.code}"
        except Exception as failure:  # the job's own error, re-raised by JobReturn.return_value
            error = describe(failure)
        if error is None and not math.isfinite(value):
            error = f"the objective is {value}"
        state = "PRUNED" if pruned else "FAIL" if error is not None else "COMPLETE"
        for run in mark_training_runs(client, config, trial_run_id, state):
            metrics = client.get_run(run.info.run_id).data.metrics
            outcome.epochs.append(int(metrics.get("time/epoch", 0)))
            outcome.env_steps += int(metrics.get("time/total_timesteps", 0))
        if error is not None:
            outcome.state, outcome.error = state, error
            return outcome
        outcome.values.append(value)
    return outcome


@dataclass
class TrialJobs:
    """The payload of a trial's local process: how to run the task and one composed job config per seed."""

    hydra_context: HydraContext
    task_function: TaskFunction
    singleton_state: dict[Any, Any]
    configs: list[DictConfig]
    trial_run_id: str
    tracking_uri: str | None


def _run_job(jobs: TrialJobs, config: DictConfig) -> Any:
    result = run_job(
        hydra_context=jobs.hydra_context,
        task_function=jobs.task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    return result.return_value


def _end_when_orphaned(pipe_fd: int) -> None:
    """SIGTERM this process once the sweep that reads `pipe_fd` is gone: train checkpoints and stops, no orphan.

    The write end of a pipe reports an error when its read end, the sweep's, closes: on exit or when killed.
    (The parent pid says nothing here: the parent is the fork server, which may outlive the sweep.)
    """
    poller = select.poll()
    poller.register(pipe_fd, 0)  # errors and hang-ups are always reported
    poller.poll()
    os.kill(os.getpid(), signal.SIGTERM)


def run_trial_process(payload: bytes, connection: Connection) -> None:
    """Entry point of a trial's process: run its jobs (one per seed) and send back a :class:`TrialOutcome`."""
    watched = os.dup(connection.fileno())  # stays open after the connection is closed below
    threading.Thread(target=_end_when_orphaned, args=(watched,), daemon=True).start()
    jobs: TrialJobs = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(jobs.singleton_state)
    client = MlflowClient(jobs.tracking_uri)
    calls = (functools.partial(_run_job, jobs, config) for config in jobs.configs)  # lazy: seeds one by one
    outcome = collect_outcome(client, jobs.configs, jobs.trial_run_id, calls)
    try:
        connection.send(outcome)
    except OSError:  # the sweep is gone; its heartbeat lapses and another worker retries the trial
        pass
    connection.close()


class ProcessTrial:
    """A trial running in a fresh local process (the default: Hydra's basic launcher is configured).

    :param context: The multiprocessing context that starts the process (a fork server, see `_impl`).
    :param jobs: What the process runs.
    """

    def __init__(self, context: Any, jobs: TrialJobs) -> None:
        self.jobs = jobs
        self.connection, sender = context.Pipe(duplex=False)
        payload = cloudpickle.dumps(jobs)
        self.process = context.Process(target=run_trial_process, args=(payload, sender), daemon=False)
        self.process.start()
        sender.close()
        self.sentinel = self.process.sentinel
        self.where = f"pid {self.process.pid}"

    def outcome(self) -> TrialOutcome:
        """The trial's outcome once its process has ended; FAIL with the cause if it died without one."""
        self.process.join()
        outcome: TrialOutcome | None = None
        if self.connection.poll():
            try:
                outcome = self.connection.recv()
            except (EOFError, OSError):
                outcome = None
        self.connection.close()
        if outcome is not None:
            return outcome
        code = self.process.exitcode or 0
        cause = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        client = MlflowClient(self.jobs.tracking_uri)
        for config in self.jobs.configs:
            mark_training_runs(client, config, self.jobs.trial_run_id, "FAIL")
        return TrialOutcome("FAIL", error=f"the trial's process died ({cause})")

    def interrupt(self, timeout: float) -> None:
        """Give the process (already sent SIGINT by the terminal) `timeout` seconds to checkpoint, then kill it."""
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LauncherTrial:
    """A trial whose jobs go through the configured Hydra launcher (e.g. submitit), awaited in a thread.

    Hydra's launcher API is a blocking batch call, so each trial gets its own call in its own thread: trials
    still start as soon as a slot frees up, and the seeds of one trial run side by side on the cluster.

    :param launcher: The Hydra launcher, set up once per sweep.
    :param overrides: One override list per seed.
    :param first_job: `hydra.job.num` of the first seed's job (the rest count up from it).
    :param configs: The jobs' configs as composed here (for their run dirs).
    :param trial_run_id: The trial's MLflow run, parent of the jobs' runs.
    :param tracking_uri: MLflow tracking URI.
    """

    def __init__(
        self,
        launcher: Launcher,
        overrides: list[list[str]],
        first_job: int,
        configs: list[DictConfig],
        trial_run_id: str,
        tracking_uri: str | None,
    ) -> None:
        self.launcher, self.overrides, self.first_job = launcher, overrides, first_job
        self.configs, self.trial_run_id, self.tracking_uri = configs, trial_run_id, tracking_uri
        self.connection, self._sender = multiprocessing.Pipe(duplex=False)
        self.sentinel = self.connection
        self.where = type(launcher).__name__
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = MlflowClient(self.tracking_uri)
        try:
            returns = self.launcher.launch(self.overrides, initial_job_idx=self.first_job)
            results = (lambda job=job: job.return_value for job in returns)
            outcome = collect_outcome(client, self.configs, self.trial_run_id, results)
        except Exception as error:  # the scheduler lost the job, a timeout, a submission error
            for config in self.configs:
                mark_training_runs(client, config, self.trial_run_id, "FAIL")
            outcome = TrialOutcome("FAIL", error=f"the launcher failed: {describe(error)}")
        self._sender.send(outcome)
        self._sender.close()

    def outcome(self) -> TrialOutcome:
        """The trial's outcome; FAIL if the launcher was still waiting when the sweep was interrupted."""
        if self.connection.poll():
            return self.connection.recv()
        return TrialOutcome("FAIL", error="the sweep was interrupted while the launcher waited for the jobs")

    def interrupt(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the jobs (the scheduler may keep them running after that)."""
        self._thread.join(timeout=timeout)
