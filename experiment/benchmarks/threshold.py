"""Threshold benchmark: env steps and wall time until each configuration first reaches a test success rate.

    python experiment/benchmarks/threshold.py --group NAME OVERRIDE... [--group NAME2 OVERRIDE...]
        [--common OVERRIDE...] [--seeds 0 1 2] [--threshold 0.9] [--eval-every N --max-steps N] [--full-budget]
        [--final-episodes 100] [--save-model-freq N] [--workdir DIR] [--experiment NAME] [--plot docs/curves.png]

Every group is a list of Hydra overrides of `experiment/train.py` (e.g. `--group her-sac +tuned=AntReacher-v1`),
`--common` overrides apply to every group. For every seed it trains each group in turn (one run at a time,
in-process through `train(cfg)`), with a deterministic test of `n_test_rollouts` episodes after every epoch,
until the first test at or above `--threshold` (or, with `--full-budget`, to the end of the budget, for whole
curves). `--eval-every`/`--max-steps` set the epoch length and the budget; without them the config's own
(`eval_after_n_steps` x `n_epochs`, e.g. a preset's) apply. With `--final-episodes N` each run's final checkpoint
is re-tested on N episodes (experiment/evaluate.py's protocol, with a 95% Wilson interval). It prints a per-seed
table (first step at the threshold, wall seconds, final success, the test curve), the medians per group (a run
that never reached the threshold counts as more than any budget) and, for two or more groups, the ratio of every
group's median to the first group's. Runs log to `DIR/mlflow.db` with the tag `benchmark_group`, and `--plot`
draws the groups' curves from there with experiment/plot.py.

Long benchmarks outlive a session: with `--save-model-freq N` every run checkpoints every N epochs, and the same
command run again (with the same `--experiment`, which the last line prints) continues each unfinished run from
its checkpoint in `DIR/<group>_seed<seed>` (`restore_from`) and leaves a finished one (threshold reached, or
budget spent) as it is; the table then holds every seed.
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from experiment import plot
from experiment.benchmarks.benchmark import rl_zoo_rate
from experiment.cli import CONF_DIR, register_resolvers
from experiment.epoch_loop import STEPS_METRIC, EpochHook
from experiment.evaluate import evaluate_run
from experiment.train import train
from util.checkpoint import find_checkpoint

GROUP_TAG = "benchmark_group"
SUCCESS = "test/success_rate"


@dataclass
class ThresholdRun:
    """One trained run: where the test curve first reached the threshold, and its final re-test."""

    group: str
    seed: int
    run_dir: Path
    curve: list[tuple[int, float]] = field(default_factory=list)
    reached_at: int | None = None
    seconds_to_threshold: float | None = None
    seconds: float = 0.0
    final: dict[str, float] | None = None


def first_reaching(history: dict[str, list[float]], threshold: float) -> tuple[int | None, float | None]:
    """(env steps, the loop's wall seconds) of the first epoch in `history` whose test reached `threshold`."""
    for success, steps, seconds in zip(
        history.get(SUCCESS, []), history.get(STEPS_METRIC, []), history.get(plot.WALL_METRIC, [])
    ):
        if success >= threshold:
            return int(steps), float(seconds)
    return None, None


def train_to_threshold(
    overrides: list[str],
    threshold: float,
    workdir: Path,
    experiment: str,
    name: str,
    epoch_hooks: Sequence[EpochHook] = (),
    stop_at_threshold: bool = True,
    save_model_freq: int = 0,
) -> dict[str, list[float]]:
    """Train one configuration in-process until its test success first reaches `threshold` (or the budget ends).

    Returns the run's test success, env steps and wall seconds (training plus testing) per epoch, under their
    metric names (:func:`first_reaching` reads the threshold's epoch from it). The run logs to the MLflow store
    `workdir/mlflow.db` under `experiment` and writes into `workdir/name`; `epoch_hooks` also see every epoch's
    metrics. Without `stop_at_threshold` the run uses its whole budget (for whole curves). A run directory that
    holds a checkpoint is continued from it, and not trained at all if it is already finished.
    """
    run_dir = workdir / name
    saved = find_checkpoint(run_dir)
    history: dict[str, list[float]] = {} if saved is None else saved.state["history"]
    if saved is not None:
        print(f"  {name}: continuing {run_dir} from {saved.state['env_steps']} env steps", flush=True)

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        for key in (SUCCESS, STEPS_METRIC, plot.WALL_METRIC):
            history.setdefault(key, []).append(metrics[key])

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "main",
            overrides=[
                f"early_stop_threshold={threshold if stop_at_threshold else math.inf}",
                "early_stop_last_n=1",
                "progress_bar=false",
                f"save_model_freq={save_model_freq}",
                f"base_logdir={workdir / 'data'}",
                f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
                f"mlflow.experiment_name={experiment}",
                *overrides,
                *([] if saved is None else [f"restore_from={run_dir}"]),
            ],
        )
    reached = first_reaching(history, threshold)
    finished = saved is not None and (
        saved.state["epoch"] >= cfg.n_epochs or (stop_at_threshold and reached[0] is not None)
    )
    if not finished:
        train(cfg, run_dir=run_dir, epoch_hooks=[hook, *epoch_hooks])
    return history


def run_group_seed(group: str, overrides: list[str], seed: int, args: argparse.Namespace) -> ThresholdRun:
    """Train one group's configuration for one seed, tag its MLflow run and optionally re-test its checkpoint."""
    run = ThresholdRun(group, seed, args.workdir / f"{group}_seed{seed}")

    def show(epoch: int, metrics: dict[str, float]) -> None:
        steps, success = int(metrics[STEPS_METRIC]), metrics[SUCCESS]
        print(f"  {group} seed {seed} steps {steps:>8} test/success_rate {success:.2f}", flush=True)

    started = time.perf_counter()
    history = train_to_threshold(
        [*args.common, *overrides, *_budget(args), f"seed={seed}"],
        args.threshold,
        args.workdir,
        args.experiment,
        run.run_dir.name,
        epoch_hooks=[show],
        stop_at_threshold=not args.full_budget,
        save_model_freq=args.save_model_freq,
    )
    run.seconds = time.perf_counter() - started
    run.curve = [
        (int(steps), success) for steps, success in zip(history.get(STEPS_METRIC, []), history.get(SUCCESS, []))
    ]
    run.reached_at, run.seconds_to_threshold = first_reaching(history, args.threshold)
    _tag_group(args.workdir, run.run_dir, group)
    if args.final_episodes > 0:
        run.final = evaluate_run(run.run_dir, args.final_episodes)
    return run


def _budget(args: argparse.Namespace) -> list[str]:
    if args.eval_every is None:
        return []
    return [f"eval_after_n_steps={args.eval_every}", f"n_epochs={args.max_steps // args.eval_every}"]


def _tag_group(workdir: Path, run_dir: Path, group: str) -> None:
    """Tag the MLflow run written into `run_dir` with its group, which experiment/plot.py can group by."""
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    for found in client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.run_dir = '{run_dir.resolve()}'"
    ):
        client.set_tag(found.info.run_id, GROUP_TAG, group)


def median_steps(runs: list[ThresholdRun]) -> float:
    """Median env steps to the threshold; a run that never reached it counts as infinitely many."""
    return statistics.median(math.inf if r.reached_at is None else r.reached_at for r in runs)


def report(runs: list[ThresholdRun], groups: list[str], args: argparse.Namespace) -> None:
    """Print the per-seed table, the medians per group and their ratios to the first group."""
    print(
        f"\n| group | seed | first test >= {args.threshold} (env steps) | wall s to it | final success | test curve |"
    )
    print("|---|---|---|---|---|---|")
    for run in runs:
        final = "-"
        if run.final is not None:
            final = (
                f"{run.final['test/success_rate']:.2f} ({run.final['test/success_low']:.2f}-"
                f"{run.final['test/success_high']:.2f}) at {int(run.final['env_steps'])}"
            )
        hit = "not reached" if run.reached_at is None else f"{run.reached_at}"
        wall = "-" if run.seconds_to_threshold is None else f"{run.seconds_to_threshold:.0f}"
        curve = " ".join(f"{success:.1f}" for _, success in run.curve)
        print(f"| {run.group} | {run.seed} | {hit} | {wall} | {final} | {curve} |")
    medians = {g: median_steps([r for r in runs if r.group == g]) for g in groups}
    for group in groups:
        mine = [r for r in runs if r.group == group]
        reached = [r for r in mine if r.reached_at is not None]
        shown = "not reached (most seeds missed)" if math.isinf(medians[group]) else f"{medians[group]:.0f} env steps"
        walls = [r.seconds_to_threshold for r in reached if r.seconds_to_threshold is not None]
        wall = f", median wall {statistics.median(walls):.0f} s over reaching seeds" if walls else ""
        finals = [r.final["test/success_rate"] for r in mine if r.final is not None]
        final = f", median final success {statistics.median(finals):.3f}" if finals else ""
        print(f"{group}: reached in {len(reached)}/{len(mine)} seeds; median {shown}{wall}{final}")
    first = groups[0]
    for group in groups[1:]:
        if math.isinf(medians[first]) or math.isinf(medians[group]):
            print(f"ratio {group} / {first}: undefined (a median is beyond the budget)")
        else:
            print(f"ratio {group} / {first}: {medians[group] / medians[first]:.2f}")


def report_rl_zoo(runs: list[ThresholdRun], args: argparse.Namespace) -> None:
    """Measure RL Zoo's env steps/s here and, with its published steps to the threshold, its projected wall time."""
    algo, env_id, conf_file = args.rl_zoo
    rate = rl_zoo_rate(algo, env_id, Path(conf_file), args.rl_zoo_warmup, args.rl_zoo_steps, args.workdir)
    print(
        f"RL Zoo {algo} on {env_id} with its own settings: {rate:.2f} env steps/s on this machine "
        f"(env steps {args.rl_zoo_warmup}-{args.rl_zoo_warmup + args.rl_zoo_steps}, one torch thread)"
    )
    if args.rl_zoo_steps_to_threshold is None:
        return
    projected = args.rl_zoo_steps_to_threshold / rate
    print(
        f"RL Zoo's projected wall time to the threshold here: {args.rl_zoo_steps_to_threshold} published env steps "
        f"/ {rate:.2f} env steps/s = {projected:.0f} s"
    )
    for group in dict.fromkeys(r.group for r in runs):
        walls = [r.seconds_to_threshold for r in runs if r.group == group and r.seconds_to_threshold is not None]
        if walls:
            ours = statistics.median(walls)
            print(
                f"{group}: median wall time to the threshold {ours:.0f} s = {ours / projected:.3f} x RL Zoo's projected"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; `--group` may repeat and needs a name and at least one override."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME OVERRIDE",
        help="a configuration: its name, then Hydra overrides (repeatable)",
    )
    parser.add_argument("--common", nargs="*", default=[], help="Hydra overrides for every group")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--eval-every", type=int, default=None, help="env steps per epoch (default: the config's)")
    parser.add_argument("--max-steps", type=int, default=None, help="budget in env steps (with --eval-every)")
    parser.add_argument("--full-budget", action="store_true", help="train for the whole budget, not to the threshold")
    parser.add_argument("--final-episodes", type=int, default=0, help="re-test every final checkpoint on N episodes")
    parser.add_argument(
        "--save-model-freq",
        type=int,
        default=0,
        help="checkpoint every N epochs (0: only at the end), so that the same command continues an unfinished run",
    )
    parser.add_argument("--workdir", type=Path, default=Path("data/benchmark_threshold"))
    parser.add_argument("--experiment", default=f"threshold_{time.strftime('%Y%m%d_%H%M%S')}", help="MLflow experiment")
    parser.add_argument("--plot", type=Path, default=None, help="draw every group's curve into this PNG (and PDF)")
    parser.add_argument("--title", default=None, help="title of the plot")
    parser.add_argument(
        "--rl-zoo",
        nargs=3,
        metavar=("ALGO", "ENV", "CONF_FILE"),
        default=None,
        help="also measure RL Zoo's env steps/s with its own settings, e.g. tqc FetchPush-v4 "
        "conf/benchmark/rl_zoo_fetchpush.yml (its venv .venv-bench is made on first use)",
    )
    parser.add_argument("--rl-zoo-steps", type=int, default=400, help="env steps RL Zoo is timed over")
    parser.add_argument("--rl-zoo-warmup", type=int, default=200, help="env steps RL Zoo runs before timing")
    parser.add_argument(
        "--rl-zoo-steps-to-threshold",
        type=int,
        default=None,
        help="RL Zoo's published env steps to the threshold, to project its wall time on this machine",
    )
    args = parser.parse_args(argv)
    names = [group[0] for group in args.group]
    if len(set(names)) != len(names):
        parser.error(f"--group names must differ, got {names}")
    if (args.eval_every is None) != (args.max_steps is None):
        parser.error("--eval-every and --max-steps go together")
    args.workdir = args.workdir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Train every group for every seed, one run at a time, then print the comparison and draw the curves."""
    args = parse_args(argv)
    register_resolvers()
    args.workdir.mkdir(parents=True, exist_ok=True)
    groups = {group[0]: list(group[1:]) for group in args.group}
    runs = []
    for seed in args.seeds:
        for group, overrides in groups.items():
            run = run_group_seed(group, overrides, seed, args)
            runs.append(run)
            shown = "not reached" if run.reached_at is None else f"{run.reached_at} env steps"
            print(f"{group} seed {seed}: test/success_rate >= {args.threshold}: {shown} ({run.seconds:.0f} s)")
    report(runs, list(groups), args)
    if args.rl_zoo is not None:
        report_rl_zoo(runs, args)
    if args.plot is not None:
        plot.main(
            [
                "--tracking-uri",
                f"sqlite:///{args.workdir / 'mlflow.db'}",
                "--experiment",
                args.experiment,
                "--group-by",
                GROUP_TAG,
                "--title",
                args.title or f"first test >= {args.threshold}, seeds {' '.join(map(str, args.seeds))}",
                "--out",
                str(args.plot),
            ]
        )
    given = list(argv if argv is not None else sys.argv[1:])
    if "--experiment" not in given:
        given += ["--experiment", args.experiment]
    print(f"reproduce (or continue): python experiment/benchmarks/threshold.py {shlex.join(given)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
