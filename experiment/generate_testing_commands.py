"""Write the commands `run_testing.sh` runs: every algorithm x env (function) or every performance bar.

Writes `test_cmds.txt` (one shell command per line, what the runner executes) and `test_cmds.json` (the same
commands with their test name, seed and run directory, which the checkers read).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from experiment.testing_algos import PERFORMANCE_BARS, TESTING_ALGOS, AlgorithmUnderTest, PerformanceBar
from experiment.testing_envs import TESTING_ENVS

TRAIN_SCRIPT = Path(__file__).resolve().parent / "train.py"
FUNCTION_BUDGET = ("n_epochs=2", "eval_after_n_steps=100", "n_test_rollouts=1", "save_model_freq=1")


@dataclass(frozen=True)
class TestCommand:
    """One training command of a test run, and what it belongs to."""

    name: str
    seed: int
    run_dir: str
    command: str
    bar: dict | None = None


def _command(python: str, name: str, seed: int, root: Path, tracking_uri: str, args: list[str]) -> TestCommand:
    run_dir = root / "runs" / name / f"seed{seed}"
    full = [
        python,
        str(TRAIN_SCRIPT),
        *args,
        f"seed={seed}",
        "progress_bar=false",
        f"base_logdir={root / 'runs'}",
        f"hydra.run.dir={run_dir}",
        f"mlflow.tracking_uri={tracking_uri}",
        "mlflow.experiment_name=run_testing",
    ]
    return TestCommand(name, seed, str(run_dir), shlex.join(full))


def function_commands(
    algos: dict[str, AlgorithmUnderTest], envs: dict[str, str], python: str, root: Path, tracking_uri: str
) -> list[TestCommand]:
    """Every algorithm on every env of a kind it supports, for two tiny epochs, seed 0."""
    commands = []
    for algo_name, algo in algos.items():
        for env, kind in envs.items():
            if kind in algo.env_kinds and env not in algo.not_on:
                args = [f"env={env}", *algo.overrides, *algo.tiny, *FUNCTION_BUDGET]
                commands.append(_command(python, f"{algo_name}__{env}", 0, root, tracking_uri, args))
    return commands


def performance_commands(
    bars: tuple[PerformanceBar, ...], algos: dict[str, AlgorithmUnderTest], python: str, root: Path, tracking_uri: str
) -> list[TestCommand]:
    """Every bar with each of its seeds, given exactly its step budget and stopping once the bar is reached."""
    commands = []
    for bar in bars:
        args = [
            f"env={bar.env}",
            *algos[bar.algorithm].overrides,
            *bar.overrides,
            f"eval_after_n_steps={bar.test_every}",
            f"n_epochs={max(1, bar.by_step // bar.test_every)}",
            f"early_stop_data_column={bar.metric}",
            f"early_stop_threshold={bar.min_value}",
            "early_stop_last_n=1",
        ]
        for seed in range(bar.n_seeds):
            command = _command(python, bar.name, seed, root, tracking_uri, args)
            commands.append(TestCommand(**{**asdict(command), "bar": asdict(bar)}))
    return commands


def select(commands: list[TestCommand], keyword: str | None) -> list[TestCommand]:
    """Keep the commands whose test name contains `keyword` (all if None or empty)."""
    return [c for c in commands if not keyword or keyword in c.name]


def write(commands: list[TestCommand], out: Path) -> None:
    """Write `<out>` (commands) and `<out>.json` beside it (`test_cmds.txt` -> `test_cmds.json`)."""
    out.write_text("".join(c.command + "\n" for c in commands))
    out.with_suffix(".json").write_text(json.dumps([asdict(c) for c in commands], indent=1))


def main(argv: list[str] | None = None) -> int:
    """Command line: see --help."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-t", "--type", choices=("function", "performance"), required=True)
    parser.add_argument("-k", "--filter", default="", help="keep tests whose name contains this")
    parser.add_argument("--root", type=Path, required=True, help="folder for runs and the MLflow store")
    parser.add_argument("--out", type=Path, default=Path("test_cmds.txt"))
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    if args.type == "function":
        commands = function_commands(TESTING_ALGOS, TESTING_ENVS, args.python, root, tracking_uri)
        for name, algo in TESTING_ALGOS.items():
            for env, reason in algo.not_on.items():
                print(f"not run: {name} x {env} ({reason})")
    else:
        commands = performance_commands(PERFORMANCE_BARS, TESTING_ALGOS, args.python, root, tracking_uri)
    commands = select(commands, args.filter)
    if not commands:
        print(f"error: -k {args.filter!r} matches no test", file=sys.stderr)
        return 2
    write(commands, args.out)
    print(f"{len(commands)} commands written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
