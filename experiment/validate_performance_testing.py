"""Check the performance bars of a `run_testing.sh -t performance` run against the MLflow store.

A run (one seed) passes when its metric reached the bar's value at or before the bar's env step. A bar passes
when at least `min_passing_seeds` of its seeds pass. A crashed or missing run counts as failing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from experiment.testing_report import CommandOutcome, print_table, read_outcomes


@dataclass(frozen=True)
class SeedResult:
    """What one seed of a bar achieved."""

    seed: int
    passed: bool
    best_value: float | None
    first_step_reached: int | None
    wall_seconds: float | None
    status: str


@dataclass(frozen=True)
class BarResult:
    """The verdict on one bar, with its seeds."""

    name: str
    bar: dict
    seeds: list[SeedResult]

    @property
    def passed(self) -> bool:
        """Enough seeds passed."""
        return sum(s.passed for s in self.seeds) >= self.bar["min_passing_seeds"]


def judge_seed(client: MlflowClient, experiment_ids: list[str], outcome: CommandOutcome) -> SeedResult:
    """Read one seed's run (found by its `run_dir` tag) and compare its metric history with the bar."""
    bar = outcome.bar or {}
    runs = client.search_runs(experiment_ids, filter_string=f"tags.run_dir = '{Path(outcome.run_dir).resolve()}'")
    if not runs:
        return SeedResult(outcome.seed, False, None, None, None, "no run")
    run = runs[0]
    history = [m for m in client.get_metric_history(run.info.run_id, bar["metric"]) if m.step <= bar["by_step"]]
    best = max((m.value for m in history), default=None)
    reached = sorted(m.step for m in history if m.value >= bar["min_value"])
    wall = client.get_metric_history(run.info.run_id, "time/wall_seconds")
    crashed = run.info.status == "FAILED" or (outcome.returncode not in (0, None))
    return SeedResult(
        outcome.seed,
        bool(reached) and not crashed,
        best,
        reached[0] if reached else None,
        wall[-1].value if wall else None,
        "crashed" if crashed else run.info.status.lower(),
    )


def judge(outcomes: list[CommandOutcome], tracking_uri: str) -> list[BarResult]:
    """Group the executed commands by bar and judge each bar."""
    client = MlflowClient(tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    results: dict[str, BarResult] = {}
    for outcome in outcomes:
        if outcome.bar is None:
            continue
        result = results.setdefault(outcome.name, BarResult(outcome.name, outcome.bar, []))
        result.seeds.append(judge_seed(client, experiment_ids, outcome))
    return list(results.values())


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    """Command line: `--commands test_cmds.json --logs <dir> --tracking-uri URI`; exit 1 if a bar fails."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args(argv)
    results = judge(read_outcomes(args.commands, args.logs), args.tracking_uri)
    rows = []
    for result in results:
        bar = result.bar
        rows.append(
            [
                result.name,
                "PASS" if result.passed else "FAIL",
                f"{sum(s.passed for s in result.seeds)}/{len(result.seeds)} (need {bar['min_passing_seeds']})",
                f"{bar['metric']} >= {bar['min_value']} by {bar['by_step']}",
                ", ".join("-" if s.best_value is None else f"{s.best_value:.2f}" for s in result.seeds),
                _median([float(s.first_step_reached) for s in result.seeds if s.first_step_reached is not None]),
                _median([s.wall_seconds for s in result.seeds if s.wall_seconds is not None]),
            ]
        )
    print_table(
        "performance tests",
        [
            "combination",
            "result",
            "seeds passing",
            "bar",
            "best value per seed",
            "median steps to bar",
            "median wall s",
        ],
        rows,
    )
    failed = [r for r in results if not r.passed]
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
