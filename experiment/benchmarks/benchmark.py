"""Benchmark our default HER-SAC against RL Zoo's SAC+HER on FetchReach-v4, side by side in one invocation.

Both get the same protocol: seeds 0, 1, 2 (configurable), one torch thread, 10 deterministic test episodes every
1,000 env steps, at most 10,000 env steps. Runs alternate ours / theirs so that machine load hits both alike.
Every line a run prints is timestamped from the moment its process starts, so wall time includes start-up for
both. RL Zoo lives in its own venv (`.venv-bench/`, created on first use); it is not a dependency of ours.

    python experiment/benchmarks/benchmark.py [--seeds 0 1 2]     (or `make bench`)
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from util.run_info import PROJECT_ROOT

BENCH_VENV = PROJECT_ROOT / ".venv-bench"
BENCH_PACKAGES = ["torch==2.13.0", "rl_zoo3==2.9.2", "mujoco==3.11.0", "gymnasium-robotics==1.4.2"]
THRESHOLD = 0.9
EVAL_EVERY = 1000
EVAL_EPISODES = 10

# RL Zoo's own FetchReach hyperparameters (its hyperparams/sac.yml, FetchReach-v1), registered for -v4.
RL_ZOO_CONFIG = PROJECT_ROOT / "conf" / "benchmark" / "rl_zoo_fetchreach.yml"
MAX_STEPS = 10_000

_OUR_EPOCH = re.compile(r"epoch \d+\s+steps (\d+)\s+test/success_rate ([0-9.]+)")
_ZOO_EVAL = re.compile(r"Eval num_timesteps=(\d+)")
_ZOO_SUCCESS = re.compile(r"Success rate: ([0-9.]+)%")
_ZOO_STEPS = re.compile(r"\|\s+total_timesteps\s+\|\s+(\d+)")


@dataclass(frozen=True)
class RunResult:
    """One benchmark run: env steps and wall seconds to the first test >= THRESHOLD (None if never)."""

    framework: str
    seed: int
    steps_to_threshold: int | None
    seconds_to_threshold: float | None
    command: str

    @property
    def steps_per_second(self) -> float | None:
        """Env steps per wall second up to the threshold, start-up included."""
        if self.steps_to_threshold is None or not self.seconds_to_threshold:
            return None
        return self.steps_to_threshold / self.seconds_to_threshold


def ensure_bench_venv() -> Path:
    """Create `.venv-bench` with RL Zoo on first use; return its python."""
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *BENCH_PACKAGES], check=True)
    return python


def watch(command: list[str], parse: Callable[[str, dict], tuple[int, float] | None]) -> tuple[int, float] | None:
    """Run `command`, timestamp its output lines, stop it at the first eval >= THRESHOLD.

    `parse(line, state)` returns (env steps, success rate) when a line completes an evaluation.
    Returns (env steps, seconds since start) of the first eval reaching the threshold, or None.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT)
    assert process.stdout is not None
    state: dict = {}
    reached = None
    for line in process.stdout:
        evaluation = parse(line, state)
        if evaluation is not None and evaluation[1] >= THRESHOLD:
            reached = (evaluation[0], time.perf_counter() - started)
            break
    process.terminate()
    process.wait()
    return reached


def rl_zoo_rate(algo: str, env_id: str, conf_file: Path, warmup: int, steps: int, logdir: Path) -> float:
    """RL Zoo's env steps per second with its own settings (`conf_file`) over `steps` env steps after `warmup`.

    Runs `rl_zoo3.train` (one torch thread, no evaluation) and timestamps SB3's log tables, printed every few
    episodes: the rate is the env steps between the first table at or past `warmup` and the first at or past
    `warmup + steps`, divided by the wall time between them. Start-up and warm-up are not counted.
    """
    python = ensure_bench_venv()
    command = [
        str(python),
        "-m",
        "rl_zoo3.train",
        "--algo",
        algo,
        "--env",
        env_id,
        "--conf-file",
        str(conf_file),
        "--gym-packages",
        "gymnasium_robotics",
        "--num-threads",
        "1",
        "--eval-freq",
        "-1",
        "--device",
        "cpu",
        "--log-folder",
        str(logdir / "rl_zoo"),
        "--verbose",
        "1",
        "-n",
        str(warmup + steps + 1000),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT)
    assert process.stdout is not None
    first: tuple[int, float] | None = None
    try:
        for line in process.stdout:
            match = _ZOO_STEPS.search(line)
            if not match:
                continue
            now, at = time.perf_counter(), int(match.group(1))
            if first is None and at >= warmup:
                first = (at, now)
            elif first is not None and at >= warmup + steps:
                return (at - first[0]) / (now - first[1])
    finally:
        process.terminate()
        process.wait()
    raise RuntimeError(f"rl_zoo3.train ended before {warmup + steps} env steps: {shlex.join(command)}")


def parse_ours(line: str, state: dict) -> tuple[int, float] | None:
    """Our epoch log line: `epoch N  steps S  test/success_rate R ...`."""
    match = _OUR_EPOCH.search(line)
    return (int(match.group(1)), float(match.group(2))) if match else None


def parse_rl_zoo(line: str, state: dict) -> tuple[int, float] | None:
    """SB3's EvalCallback prints `Eval num_timesteps=S, ...` then `Success rate: P%`."""
    match = _ZOO_EVAL.search(line)
    if match:
        state["steps"] = int(match.group(1))
        return None
    match = _ZOO_SUCCESS.search(line)
    if match and "steps" in state:
        return state["steps"], float(match.group(1)) / 100
    return None


def our_command(seed: int, logdir: Path) -> list[str]:
    """Our default training with the shared eval protocol."""
    return [
        sys.executable,
        str(PROJECT_ROOT / "experiment" / "train.py"),
        f"seed={seed}",
        f"eval_after_n_steps={EVAL_EVERY}",
        f"n_test_rollouts={EVAL_EPISODES}",
        f"n_epochs={MAX_STEPS // EVAL_EVERY}",
        "early_stop_last_n=1",
        f"early_stop_threshold={THRESHOLD}",
        "torch_threads=1",
        "progress_bar=false",
        f"base_logdir={logdir / 'data'}",
        f"mlflow.tracking_uri=sqlite:///{logdir / 'mlflow.db'}",
    ]


def rl_zoo_command(python: Path, seed: int, logdir: Path) -> list[str]:
    """RL Zoo's trainer with its FetchReach hyperparameters and the shared eval protocol."""
    return [
        str(python),
        "-m",
        "rl_zoo3.train",
        "--algo",
        "sac",
        "--env",
        "FetchReach-v4",
        "--seed",
        str(seed),
        "--conf-file",
        str(RL_ZOO_CONFIG),
        "--gym-packages",
        "gymnasium_robotics",
        "--num-threads",
        "1",
        "--eval-freq",
        str(EVAL_EVERY),
        "--eval-episodes",
        str(EVAL_EPISODES),
        "--n-eval-envs",
        "1",
        "--log-folder",
        str(logdir / "rl_zoo"),
        "--device",
        "cpu",
        "--verbose",
        "1",
    ]


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(results: list[RunResult]) -> None:
    """Print per-run rows, medians per framework and the ours/theirs ratios."""
    print(f"\n{'framework':<10} {'seed':>4} {'steps to 0.9':>13} {'wall s to 0.9':>14} {'env steps/s':>12}")
    for r in results:
        print(
            f"{r.framework:<10} {r.seed:>4} {_fmt(r.steps_to_threshold):>13} "
            f"{_fmt(r.seconds_to_threshold, 1):>14} {_fmt(r.steps_per_second, 1):>12}"
        )
    medians = {}
    for framework in ("ours", "rl_zoo"):
        runs = [r for r in results if r.framework == framework]
        medians[framework] = (
            _median([r.steps_to_threshold for r in runs]),
            _median([r.seconds_to_threshold for r in runs]),
            _median([r.steps_per_second for r in runs]),
        )
        steps, seconds, rate = medians[framework]
        print(f"{framework + ' median':<15} {_fmt(steps):>13} {_fmt(seconds, 1):>14} {_fmt(rate, 1):>12}")
    ours, theirs = medians["ours"], medians["rl_zoo"]
    labels = ("env steps to 0.9", "wall seconds to 0.9", "env steps/s")
    for label, a, b in zip(labels, ours, theirs):
        ratio = "-" if a is None or not b else f"{a / b:.2f}"
        print(f"ratio ours/rl_zoo, {label}: {ratio}")
    print("\ncommands to reproduce:")
    for r in results:
        print(f"  {r.command}")


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    zoo_python = ensure_bench_venv()
    logdir = PROJECT_ROOT / "data" / "benchmark" / time.strftime("%Y-%m-%d_%H-%M-%S")
    logdir.mkdir(parents=True)
    results = []
    for seed in args.seeds:
        for framework, command, parse in (
            ("ours", our_command(seed, logdir), parse_ours),
            ("rl_zoo", rl_zoo_command(zoo_python, seed, logdir), parse_rl_zoo),
        ):
            reached = watch(command, parse)
            result = RunResult(framework, seed, *(reached or (None, None)), shlex.join(command))
            print(
                f"{framework} seed {seed}: {_fmt(result.steps_to_threshold)} steps, "
                f"{_fmt(result.seconds_to_threshold, 1)} s",
                flush=True,
            )
            results.append(result)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
