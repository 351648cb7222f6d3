"""Benchmark: 2-layer HAC against flat HER-SAC on a long-horizon maze, same env, budget, seeds and test protocol.

    python experiment/benchmark_hac_maze.py [--env PointMaze_Medium-v3] [--time-scales [30,-1]] [--seeds 0 1 2]
        [--max-steps 30000] [--eval-every 2000] [--threshold 0.8] [--full-budget] [--final-episodes 200]
        [--workdir data/benchmark_hac_maze]
        [--plot docs/pointmaze_medium_hac_vs_her.png] [--hac OVERRIDE ...] [--her OVERRIDE ...]

Issue 4's bar: on PointMaze_Medium-v3 (or harder) 2-layer HAC reaches test success >= 0.8 in at most half the env
steps flat HER-SAC needs. For every seed it trains HAC, then HER-SAC (one run at a time, in-process through
`train(cfg)`), each with `--eval-every` env steps per epoch, 10 deterministic test episodes per epoch and at most
`--max-steps` env steps; a run stops at its first test >= threshold (with `--full-budget` it trains on, for
whole curves). The maze is episodic
(`env_kwargs.continuing_task=false`: an episode ends on success or at the step limit, 600 on Medium) and pays
-1/0 through the env factory's reward-convention wrapper. It prints env steps and wall seconds to the threshold
per run, the medians (a run that never reached it counts as more than the budget), their ratio, and draws both
learning curves from the MLflow store `<workdir>/mlflow.db` with experiment/plot.py. With `--final-episodes N` it
also re-tests every run's final checkpoint on N greedy episodes (experiment/evaluate.py; with `--full-budget` that
is the success after the whole budget, far less noisy than a 10-episode test) and prints both medians and the seeds
where HAC is ahead. The README's numbers pass `--hac env_subprocess=false --her env_subprocess=false` (one process
per run; HER-SAC's default subprocess env acts with a policy one gradient step old, which gives other
trajectories).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from experiment import plot
from experiment.benchmark_hac import train_to_threshold
from experiment.cli import register_resolvers
from experiment.evaluate import evaluate_run

# Shared by both algorithms: the episodic maze and the test protocol.
COMMON = ["+env_kwargs.continuing_task=false", "n_test_rollouts=10"]
# 2 layers on PointMaze_Medium-v3: 30 subgoals of at most 20 steps (about a cell) each fill the 600-step episode.
# Measured on seed 0 (first test >= 0.8 within 20k steps): [10,-1] not reached (best 0.7), [20,-1] 0.8 at 12k,
# [30,-1] 0.9 at 12k.
TIME_SCALES = "[30,-1]"
HER_SAC = ["algorithm=her", "algorithm.model_class=sac"]


def _median(steps: list[int | None]) -> float:
    """Median env steps; a run that did not reach the threshold counts as infinitely many."""
    return statistics.median(math.inf if s is None else s for s in steps)


def _shown(steps: float, budget: int) -> str:
    return f"> {budget}" if math.isinf(steps) else f"{steps:.0f}"


def main() -> None:
    """Run HAC and HER-SAC for every seed, one run at a time, then print the comparison and draw the curves."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="PointMaze_Medium-v3", help="a sparse gymnasium-robotics maze")
    parser.add_argument("--time-scales", default=TIME_SCALES, help="HAC's algorithm.time_scales, top layer first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=2000, help="env steps per epoch (a test after each)")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument(
        "--full-budget", action="store_true", help="train every run for --max-steps instead of stopping at the threshold"
    )
    parser.add_argument(
        "--final-episodes", type=int, default=0, help="re-test each run's final checkpoint on this many episodes"
    )
    parser.add_argument("--workdir", type=Path, default=Path("data/benchmark_hac_maze"))
    parser.add_argument(
        "--experiment", default=f"benchmark_hac_maze_{time.strftime('%Y%m%d_%H%M%S')}",
        help="MLflow experiment of these runs (default: a new one per invocation, so the plot shows only them)",
    )
    parser.add_argument("--plot", type=Path, default=None, help="write both learning curves to this PNG (and PDF)")
    parser.add_argument("--hac", nargs="*", default=[], help="extra Hydra overrides for HAC")
    parser.add_argument("--her", nargs="*", default=[], help="extra Hydra overrides for HER-SAC")
    args = parser.parse_args()
    register_resolvers()
    budget = [f"eval_after_n_steps={args.eval_every}", f"n_epochs={args.max_steps // args.eval_every}"]
    hac_overrides = ["algorithm=hac", f"algorithm.time_scales={args.time_scales}"]
    runs = {"hac": [*hac_overrides, *args.hac], "her-sac": [*HER_SAC, *args.her]}
    steps: dict[str, list[int | None]] = {name: [] for name in runs}
    final: dict[str, list[float]] = {name: [] for name in runs}
    for seed in args.seeds:
        for name, overrides in runs.items():
            reached, seconds = train_to_threshold(
                [f"env={args.env}", *COMMON, *budget, f"seed={seed}", *overrides],
                args.threshold,
                args.workdir,
                args.experiment,
                f"{name}_seed{seed}",
                stop_at_threshold=not args.full_budget,
            )
            steps[name].append(reached)
            shown = "not reached" if reached is None else f"{reached} env steps, {seconds:.0f} s"
            print(f"seed {seed} {name}: test/success_rate >= {args.threshold}: {shown}", flush=True)
            if args.final_episodes > 0:
                tested = evaluate_run(args.workdir / f"{name}_seed{seed}", args.final_episodes)
                final[name].append(tested["test/success_rate"])
                print(
                    f"seed {seed} {name}: final success {tested['test/success_rate']:.3f} "
                    f"(95% CI {tested['test/success_low']:.3f}-{tested['test/success_high']:.3f}) over "
                    f"{args.final_episodes} episodes after {tested['env_steps']} env steps",
                    flush=True,
                )
    hac, her = _median(steps["hac"]), _median(steps["her-sac"])
    print(f"median env steps to >= {args.threshold} over seeds {args.seeds} (budget {args.max_steps}): "
          f"HAC {_shown(hac, args.max_steps)}, HER-SAC {_shown(her, args.max_steps)}")
    if math.isinf(hac):
        print("ratio HAC / HER-SAC: undefined (HAC did not reach the threshold)")
    elif math.isinf(her):
        print(f"ratio HAC / HER-SAC: < {hac / args.max_steps:.2f} (HER-SAC did not reach it within the budget)")
    else:
        print(f"ratio HAC / HER-SAC: {hac / her:.2f} (issue 4's bar: <= 0.5)")
    if args.final_episodes > 0:
        ahead = sum(a > b for a, b in zip(final["hac"], final["her-sac"]))
        print(f"median final success over {args.final_episodes} episodes: HAC {statistics.median(final['hac']):.3f}, "
              f"HER-SAC {statistics.median(final['her-sac']):.3f}; HAC ahead in {ahead} of {len(args.seeds)} seeds")
    if args.plot is not None:
        plot.main([
            "--tracking-uri", f"sqlite:///{args.workdir / 'mlflow.db'}",
            "--experiment", args.experiment,
            "--env", args.env,
            "--group-by", "algorithm",
            "--title", f"{args.env}: 2-layer HAC vs flat HER-SAC, seeds {' '.join(map(str, args.seeds))}",
            "--out", str(args.plot),
        ])
    extra = [f"--hac {' '.join(args.hac)}" if args.hac else "", f"--her {' '.join(args.her)}" if args.her else ""]
    command = " ".join(
        ["python experiment/benchmark_hac_maze.py", "--env", args.env, "--time-scales", args.time_scales,
         "--seeds", *map(str, args.seeds),
         "--max-steps", str(args.max_steps), "--eval-every", str(args.eval_every),
         *(["--full-budget"] if args.full_budget else []),
         *(["--final-episodes", str(args.final_episodes)] if args.final_episodes else []), *filter(None, extra)]
    )
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
