"""Benchmark: HER-SAC with conf/tuned/AntReacher-v1.yaml, env steps until test/success_rate first reaches 0.5.

    python experiment/benchmark_ant_reacher.py [--seeds 0 1 2] [--threshold 0.5] [--workdir DIR] [override ...]

Trains one seed after another (never two at once), in-process through `train(cfg)`, each until its first epoch
whose `test/success_rate` (10 deterministic test episodes every 5,000 env steps) reaches the threshold or the
150,000-step budget of the tuned config ends. Prints per seed the env steps and wall seconds (training plus
testing) at that epoch and the success rate of every epoch, then the median over seeds (a seed that never
reaches the threshold counts as above every budget, so the median exists when most seeds reach it). The runs
log to `DIR/mlflow.db` (experiment `benchmark_ant_reacher`) for `experiment/plot.py`. The issue's bar:
>= 0.5 within 150,000 env steps.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from experiment.benchmark_hac import train_to_threshold
from experiment.cli import register_resolvers

EXPERIMENT = "benchmark_ant_reacher"


def run_seed(seed: int, threshold: float, overrides: list[str], workdir: Path) -> tuple[list[tuple[int, float]], float]:
    """Train one seed until test success first reaches `threshold`; ([(env steps, success) per epoch], wall s)."""
    curve: list[tuple[int, float]] = []

    def record(epoch: int, metrics: dict[str, float]) -> None:
        curve.append((int(metrics["time/total_timesteps"]), float(metrics["test/success_rate"])))
        print(f"  seed {seed} steps {curve[-1][0]:>7} test/success_rate {curve[-1][1]:.2f}", flush=True)

    started = time.perf_counter()
    run = ["+tuned=AntReacher-v1", f"seed={seed}", *overrides]
    _, seconds = train_to_threshold(run, threshold, workdir, EXPERIMENT, f"seed{seed}", epoch_hooks=[record])
    return curve, seconds if seconds is not None else time.perf_counter() - started


def main() -> None:
    """Run the seeds one after another and print the table and the median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, default=None, help="keep runs and mlflow.db here (default: a temp dir)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. algorithm.learner.tau=0.005")
    args = parser.parse_args()
    register_resolvers()
    rows = []
    with tempfile.TemporaryDirectory(prefix="benchmark_ant_reacher_") as tmp:
        workdir = (args.workdir or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            curve, seconds = run_seed(seed, args.threshold, args.overrides, workdir)
            hit = next((steps for steps, success in curve if success >= args.threshold), None)
            rows.append((seed, hit, seconds, curve))
            shown = "not reached" if hit is None else f"{hit} env steps"
            print(f"seed {seed}: test/success_rate >= {args.threshold}: {shown}, {seconds:.0f} s", flush=True)
    print(f"\n| seed | env steps to >= {args.threshold} | wall s | test/success_rate per 5,000 steps |")
    print("|---|---|---|---|")
    for seed, hit, seconds, curve in rows:
        successes = " ".join(f"{success:.1f}" for _, success in curve)
        print(f"| {seed} | {'-' if hit is None else hit} | {seconds:.0f} | {successes} |")
    hits = [math.inf if hit is None else hit for _, hit, _, _ in rows]
    median = statistics.median(hits)
    reached = sum(hit is not None for _, hit, _, _ in rows)
    shown = "not reached (most seeds missed)" if math.isinf(median) else f"{median:.0f} env steps"
    print(f"reached in {reached}/{len(rows)} seeds; median steps to >= {args.threshold}: {shown}")
    command = " ".join(
        ["python experiment/benchmark_ant_reacher.py", "--seeds", *map(str, args.seeds), *args.overrides]
    )
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
