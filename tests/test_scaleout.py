"""Scale-out on real servers over loopback: sweep workers sharing a PostgreSQL study, a worker killed mid-trial,
an MLflow tracking server with a PostgreSQL backend, and trials launched through submitit.

PostgreSQL is a throwaway server (Debian's `postgresql` package: initdb into a temp dir, pg_ctl on a free port of
127.0.0.1), started once for this module and stopped afterwards; CI installs the package (.ci/run). Trials are
2-epoch DQN runs on `tests.sweeper_faults:Faulty-v0` over a grid of fault-free variants (`ok_0`, `ok_1`, ...),
so every parameter set is a distinct, checkable point.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from experiment.benchmarks.benchmark_sweep_workers import LocalPostgres, free_port, postgres_bin_dir
from experiment.cli import register_resolvers
from hydra_plugins.ideas_optuna_sweeper._shared_study import trials_in_budget
from hydra_plugins.ideas_optuna_sweeper._validation import validate_settings
from hydra_plugins.ideas_optuna_sweeper.config import IdeasOptunaSweeperConf
from tests.sweeper_faults import PROJECT_ROOT, sweep_command
from util.errors import ConfigError

POINTS = [f"ok_{i}" for i in range(8)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server on 127.0.0.1 for this module's tests."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL not found (pg_ctl on PATH or in /usr/lib/postgresql/*/bin): apt-get install postgresql")
    with LocalPostgres(bin_dir) as server:
        yield server


class Workers:
    """Sweep worker processes of one test, each logging to `<tmp>/<name>.log`; killed at teardown if still alive."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, storage: str, points: list[str], *args: str) -> subprocess.Popen:
        """Start a worker on `storage`: a grid over `points`, n_trials = their number, one trial at a time."""
        grid = [f"+env_kwargs.fault=choice({','.join(points)})", "hydra.sweeper.sampler=grid"]
        settings = [f"hydra.sweeper.n_trials={len(points)}", "hydra.sweeper.n_jobs=1"]
        settings.append(f"hydra.sweeper.storage={storage}")
        command, env = sweep_command(self.tmp, *grid, *settings, *args, name=name)
        with (self.tmp / f"{name}.log").open("w") as log:
            process = subprocess.Popen(command, cwd=self.tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def output(self, name: str) -> str:
        """What worker `name` printed so far."""
        return (self.tmp / f"{name}.log").read_text()

    def kill_all(self) -> None:
        """Kill every worker still running."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Start sweep workers; none outlives the test."""
    started = Workers(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


def _complete_points(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    return sorted(t.params["env_kwargs.fault"] for t in trials if t.state == TrialState.COMPLETE)


def test_budget_counts_started_trials_but_not_replaced_failures() -> None:
    running = optuna.trial.create_trial(state=TrialState.RUNNING, params={}, distributions={})
    stale = optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={})
    failed = optuna.trial.create_trial(state=TrialState.FAIL, params={}, distributions={})
    retry = optuna.trial.create_trial(state=TrialState.WAITING, params={}, distributions={})
    for number, trial in enumerate((running, stale, failed, retry)):
        trial.number = number
    retry.system_attrs = {"failed_trial": 1, "retry_history": [1]}
    assert trials_in_budget([running, stale, failed]) == 3
    assert trials_in_budget([running, stale, failed, retry]) == 2  # the retry takes the stale trial's place


def test_bad_heartbeat_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    command, env = sweep_command(tmp_path, "hydra.sweeper.heartbeat_interval=0")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: hydra.sweeper.heartbeat_interval: must be an integer >= 1 (seconds) or null, got 0"
    ]
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("url", ["nosuchdb://host/db", "mysql://user@host/db", "not a url"])
def test_unusable_storage_url_is_a_config_error_naming_the_forms(url: str) -> None:
    with pytest.raises(ConfigError, match="postgresql\\+psycopg://") as error:
        validate_settings(IdeasOptunaSweeperConf(storage=url), n_epochs=1)
    assert error.value.key == "hydra.sweeper.storage"


def test_two_workers_share_one_study_without_duplicates(workers: Workers, postgres: LocalPostgres) -> None:
    storage = postgres.create_database("shared")
    for name in ("worker0", "worker1"):
        workers.start(name, storage, POINTS)
    for name, process in zip(("worker0", "worker1"), workers.processes):
        assert process.wait(timeout=300) == 0, workers.output(name)[-3000:]
    trials = optuna.load_study(study_name="faults", storage=storage).trials
    assert [t.number for t in trials] == list(range(8))  # n_trials holds for the study, not per worker
    assert _complete_points(trials) == POINTS  # every grid point exactly once, every trial recorded COMPLETE
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)  # each trial reported to the shared study
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both workers ran trials
    recorded = []  # each worker's MLflow store holds a finished run for each of its trials
    for name in ("worker0", "worker1"):
        client = MlflowClient(f"sqlite:///{workers.tmp / f'{name}-mlflow.db'}")
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`sweep/trial` != ''")
        assert all(run.data.tags["sweep/state"] == "COMPLETE" and run.info.status == "FINISHED" for run in runs)
        recorded += [int(run.data.tags["sweep/trial"]) for run in runs]
    assert sorted(recorded) == list(range(8))


def test_a_killed_workers_trial_is_failed_and_retried_by_the_other(workers: Workers, postgres: LocalPostgres) -> None:
    storage = postgres.create_database("killed")
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    points = POINTS[:4]
    victim = workers.start("victim", storage, points, *beat)
    survivor = workers.start("survivor", storage, points, *beat)
    deadline = time.monotonic() + 120
    while not (started := re.search(r"trial (\d+) started \(slot 0, pid (\d+)\)", workers.output("victim"))):
        assert victim.poll() is None and time.monotonic() < deadline, workers.output("victim")[-3000:]
        time.sleep(0.2)
    time.sleep(1.0)  # the victim's trial is running (it takes several seconds)
    victim.kill()
    victim.wait(timeout=30)
    lost, orphan = int(started.group(1)), int(started.group(2))
    deadline = time.monotonic() + 30
    while _alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _alive(orphan), "the dead worker's trial process kept running"
    assert survivor.wait(timeout=300) == 0, workers.output("survivor")[-3000:]
    output = workers.output("survivor")
    trials = optuna.load_study(study_name="faults", storage=storage).trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in trials), [t.state for t in trials]
    (failed,) = [t for t in trials if t.state == TrialState.FAIL]
    assert failed.number == lost
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == lost]
    assert retry.state == TrialState.COMPLETE and retry.params == failed.params
    assert _complete_points(trials) == points and len(trials) == len(points) + 1
    assert f"trial {lost} (worker" in output and "its params are retried" in output


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended; only its parent has not reaped it yet
        return stat.read().split(")")[-1].split()[0] != "Z"


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def mlflow_server(tmp_path: Path, postgres: LocalPostgres) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on 127.0.0.1 with a PostgreSQL backend store and a local artifact root; URL and root."""
    backend = postgres.create_database("mlflow")
    artifacts = tmp_path / "artifacts"
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer within 120 s"
                time.sleep(0.5)
        yield url, artifacts
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_a_run_logged_to_an_mlflow_server_is_visible_through_its_rest_api(
    tmp_path: Path, mlflow_server: tuple[str, Path]
) -> None:
    url, artifacts = mlflow_server
    command = [
        sys.executable, str(PROJECT_ROOT / "experiment" / "train.py"), "env=tests.sweeper_faults:Faulty-v0",
        "algorithm.model_class=dqn", "n_epochs=1", "eval_after_n_steps=100", "n_test_rollouts=1",
        "algorithm.learner.learning_starts=50", "progress_bar=false", "comet.mode=off",
        f"base_logdir={tmp_path / 'data'}", f"mlflow.tracking_uri={url}", "mlflow.experiment_name=team",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), HOME=str(tmp_path))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the default local store
    experiment = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team")["experiment"]
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search",
        data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        (run,) = json.loads(response.read())["runs"]
    assert run["info"]["status"] == "FINISHED"
    assert "test/success_rate" in {metric["key"] for metric in run["data"]["metrics"]}
    assert {"key": "env", "value": "tests.sweeper_faults:Faulty-v0"} in run["data"]["tags"]
    query = urllib.parse.urlencode({"run_id": run["info"]["run_id"]})
    listed = {entry["path"] for entry in _get(f"{url}/api/2.0/mlflow/artifacts/list?{query}")["files"]}
    assert {"config.yaml", "train.log", "model"} <= listed
    assert list(artifacts.rglob("config.yaml"))  # served artifacts land under the server's artifact root


def test_submitit_local_launcher_runs_a_two_trial_sweep(tmp_path: Path) -> None:
    command, env = sweep_command(
        tmp_path,
        "+env_kwargs.fault=choice(ok_a,ok_b)",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        "hydra.launcher.gpus_per_node=0",
        "hydra.launcher.cpus_per_task=1",
    )
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "on LocalLauncher" in output
    study = optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")
    assert _complete_points(study.trials) == ["ok_a", "ok_b"]
    assert all(sorted(t.intermediate_values) == [1, 2] for t in study.trials)  # the pruning link reached the jobs
    job_logs = list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2, job_logs  # one submitit job per trial
    assert {p.name for p in (tmp_path / "sweep").iterdir()} >= {"0", "1"}  # job dirs numbered by trial


@pytest.mark.parametrize("launcher", ["submitit_slurm", "submitit_local"])
def test_submitit_launchers_expose_gpu_and_time_settings(launcher: str) -> None:
    register_resolvers()
    overrides = [f"hydra/launcher={launcher}", "hydra.launcher.gpus_per_node=2", "hydra.launcher.timeout_min=90"]
    if launcher == "submitit_slurm":
        overrides.append("hydra.launcher.partition=gpu")
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        config = compose("main", overrides=overrides, return_hydra_config=True)
    settings = config.hydra.launcher
    assert settings._target_.endswith("SlurmLauncher" if launcher == "submitit_slurm" else "LocalLauncher")
    assert (settings.gpus_per_node, settings.timeout_min) == (2, 90)
    assert launcher == "submitit_local" or settings.partition == "gpu"
