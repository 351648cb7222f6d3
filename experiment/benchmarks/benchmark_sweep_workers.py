"""Measure sweep scale-out: one sweep worker against two workers sharing one PostgreSQL study, same 8 trials.

Both runs get the same trials. `--trial fetchreach` (default): HER-SAC on FetchReach-v4 with a fixed budget
(2 epochs of 3,000 env steps, no pruning, no early stop), only the learning rate sampled, so every trial costs
the same CPU. `--trial sleep`: a tiny DQN run on the test env `tests.sweeper_faults:Faulty-v0` that waits 10 s
per env it makes, so trials take time but little CPU: this shows the sweep's own parallelism and overhead when
the machine has no free core for a second CPU-bound trial. Each worker is its own `train.py --multirun` process
with `n_jobs=1`, as on separate machines. The PostgreSQL server is a throwaway one
on 127.0.0.1 (Debian's `postgresql` package; initdb into a temp dir), unless `--storage` names another.
Prints the trial table (trial, worker, state, duration) of each run, worker utilisation and trials per hour
(over the wall time from process start, and over the trial span from first trial start to last trial end), and
the ratios two workers / one worker.

    python experiment/benchmarks/benchmark_sweep_workers.py [--trial fetchreach|sleep] [--trials 8] [--storage URL]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from util.run_info import PROJECT_ROOT

COMMON = [
    "~search_space",
    "algorithm.learner.learning_rate=tag(log, interval(0.0003, 0.003))",
    "n_epochs=2",
    "early_stop_threshold=2",  # never reached: every trial runs its full budget
    "progress_bar=false",
    "comet.mode=off",
    "hydra.sweeper.pruner=none",
    "hydra.sweeper.n_jobs=1",
]
TRIALS = {
    # One core per trial (no env process beside it), so that it is the workers that fill the cores.
    "fetchreach": ["env=FetchReach-v4", "eval_after_n_steps=3000", "n_test_rollouts=2", "env_subprocess=false"],
    "sleep": [
        "env=tests.sweeper_faults:Faulty-v0",
        "+env_kwargs.fault=sleep10",
        "algorithm.model_class=dqn",
        "algorithm.learner.learning_starts=50",
        "eval_after_n_steps=100",
        "n_test_rollouts=2",
    ],
}


def postgres_bin_dir() -> Path | None:
    """Where PostgreSQL's server programs are: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalPostgres:
    """A throwaway PostgreSQL server on 127.0.0.1: initdb into a temp dir, pg_ctl on a free port, trust auth.

    As root the server runs as user `postgres` (PostgreSQL refuses root), otherwise as the current user.
    Use as a context manager; the server is stopped and its directory deleted on exit, also after an error.

    :param bin_dir: PostgreSQL's programs (see :func:`postgres_bin_dir`).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ideas-pg-"))
        self.data = self.root / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, program: str, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / program), *args]
        # cwd: the server's own folder, which user postgres can enter (initdb fails where it cannot read its cwd)
        subprocess.run(command, cwd=self.root, check=True, capture_output=True, text=True, timeout=120)

    def __enter__(self) -> LocalPostgres:
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
            options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
            options += " -c fsync=off"  # a throwaway server: speed over durability
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options, "start")
        except BaseException:
            self.__exit__()
            raise
        return self

    def create_database(self, name: str) -> str:
        """Create database `name`; its SQLAlchemy URL for psycopg 3."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def __exit__(self, *exc: object) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class TrialRow:
    """One trial of the study as the table shows it: number, worker, state, start and end."""

    number: int
    worker: str
    state: str
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        """How long the trial ran."""
        return (self.end - self.start).total_seconds()


def run_workers(
    trial: list[str], storage: str, study: str, n_workers: int, n_trials: int, workdir: Path
) -> tuple[float, list[str]]:
    """Start `n_workers` sweep processes on one study at once; wall seconds until the last ends, and commands."""
    commands, processes = [], []
    for index in range(n_workers):
        folder = workdir / f"{study}_worker{index}"
        command = [
            "nice", "-n", "10", sys.executable, str(PROJECT_ROOT / "experiment" / "train.py"), "--multirun",
            *COMMON, *trial,
            f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweeper.storage={storage}",
            f"hydra.sweeper.study_name={study}", f"hydra.sweep.dir={folder / 'sweep'}",
            f"base_logdir={folder / 'data'}", f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
        ]  # fmt: skip
        folder.mkdir(parents=True)
        commands.append(shlex.join(command))
        env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))  # `--trial sleep` imports its env from tests/
        with (folder / "worker.log").open("w") as log:
            processes.append(subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT))
    start = time.monotonic()
    codes = [process.wait() for process in processes]
    wall = time.monotonic() - start
    if any(codes):
        raise SystemExit(f"a worker failed (exit codes {codes}); see {workdir}/*/worker.log")
    return wall, commands


def trial_rows(storage: str, study: str) -> list[TrialRow]:
    """The study's trials (all finished: the workers have exited)."""
    import optuna

    return [
        TrialRow(t.number, str(t.user_attrs.get("worker", "?")), t.state.name, t.datetime_start, t.datetime_complete)
        for t in optuna.load_study(study_name=study, storage=storage).trials
    ]


def report(title: str, rows: list[TrialRow], wall: float, n_workers: int) -> tuple[float, float]:
    """Print the trial table and the run's figures; return completed trials per hour of wall and of trial span.

    The span (first trial's start to last trial's end) leaves out the workers' start-up (imports, fork server,
    study), which a long sweep pays once.
    """
    complete = sum(row.state == "COMPLETE" for row in rows)
    busy = sum(row.seconds for row in rows)
    span = (max(row.end for row in rows) - min(row.start for row in rows)).total_seconds()
    print(f"\n{title}\n| trial | worker | state | duration s |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.number} | {row.worker} | {row.state} | {row.seconds:.1f} |")
    print(
        f"wall {wall:.1f} s (start-up included): {complete / wall * 3600:.0f} trials/hour, worker utilisation "
        f"{busy / (n_workers * wall):.0%} (trial seconds / (workers x wall)); trial span {span:.1f} s: "
        f"{complete / span * 3600:.0f} trials/hour, utilisation {busy / (n_workers * span):.0%}; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    return complete / wall * 3600, complete / span * 3600


def main() -> None:
    """Run one worker, then two workers, on fresh studies; print both tables and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trial", choices=sorted(TRIALS), default="fetchreach")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--storage", help="an existing PostgreSQL URL (default: a throwaway server here)")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        storage = args.storage
        if storage is None:
            bin_dir = postgres_bin_dir()
            if bin_dir is None:
                raise SystemExit("error: PostgreSQL not found: apt-get install postgresql, or pass --storage URL")
            storage = stack.enter_context(LocalPostgres(bin_dir)).create_database("optuna")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-sweep-")))
        tag = time.strftime("%Y%m%d%H%M%S")
        per_hour = {}
        for n_workers in (1, 2):
            study = f"bench_{tag}_{n_workers}w"
            wall, commands = run_workers(TRIALS[args.trial], storage, study, n_workers, args.trials, workdir)
            print(f"\n{n_workers} worker(s):\n  " + "\n  ".join(commands))
            per_hour[n_workers] = report(f"{n_workers} worker(s)", trial_rows(storage, study), wall, n_workers)
        ratios = [two / one for one, two in zip(per_hour[1], per_hour[2])]
        print(f"\ntrials/hour, 2 workers / 1 worker: {ratios[0]:.2f}x over wall, {ratios[1]:.2f}x over trial span")


if __name__ == "__main__":
    main()
