"""Benchmark: env steps and wall seconds until 2-layer HAC first reaches a test success rate on FetchReach-v4.

    python experiment/benchmark_hac.py [--seeds 0 1 2] [--max-steps 15000] [--threshold 0.9] [override ...]

Trains one seed after another (never two at once), in-process through `train(cfg)`, and prints per seed the
env steps and wall seconds (training plus testing) at the first epoch whose `test/success_rate` reaches the
threshold, then the medians. The issue's bar: >= 0.9 within 15,000 env steps in 2 of 3 seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir

from experiment.cli import CONF_DIR, register_resolvers
from experiment.epoch_loop import EpochHook
from experiment.train import train


def train_to_threshold(
    overrides: list[str],
    threshold: float,
    workdir: Path,
    experiment: str,
    name: str,
    epoch_hooks: Sequence[EpochHook] = (),
    stop_at_threshold: bool = True,
) -> tuple[int | None, float | None]:
    """Train one configuration in-process until its test success first reaches `threshold` (or the budget ends).

    Returns (env steps, wall seconds of training plus testing) at that epoch, or Nones. The run logs to the
    MLflow store `workdir/mlflow.db` under `experiment` and writes into `workdir/name`; `epoch_hooks` also see
    every epoch's metrics. Without `stop_at_threshold` the run uses its whole budget (for whole curves).
    """
    reached: list[tuple[int, float]] = []
    started = time.perf_counter()

    def hook(epoch: int, metrics: dict[str, float]) -> None:
        if not reached and metrics.get("test/success_rate", 0.0) >= threshold:
            reached.append((int(metrics["time/total_timesteps"]), time.perf_counter() - started))

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "main",
            overrides=[
                f"early_stop_threshold={threshold if stop_at_threshold else math.inf}",
                "early_stop_last_n=1",
                "progress_bar=false",
                "save_model_freq=0",
                f"base_logdir={workdir / 'data'}",
                f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}",
                f"mlflow.experiment_name={experiment}",
                *overrides,
            ],
        )
    train(cfg, run_dir=workdir / name, epoch_hooks=[hook, *epoch_hooks])
    return reached[0] if reached else (None, None)


def first_success(
    seed: int, max_steps: int, threshold: float, overrides: list[str], workdir: Path
) -> tuple[int | None, float | None]:
    """Train 2-layer HAC on FetchReach-v4 for one seed; (env steps, wall seconds) at the first test >= threshold."""
    epoch_steps = 1000
    fetch_reach = [
        "env=FetchReach-v4",
        "algorithm=hac",
        "algorithm.time_scales=[5,-1]",
        f"seed={seed}",
        f"eval_after_n_steps={epoch_steps}",
        f"n_epochs={max_steps // epoch_steps}",
        "n_test_rollouts=10",
    ]
    return train_to_threshold([*fetch_reach, *overrides], threshold, workdir, "benchmark_hac", f"seed{seed}")


def main() -> None:
    """Run the seeds one after another and print the table and medians."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=15_000)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. algorithm.subgoal_test_perc=0.2")
    args = parser.parse_args()
    register_resolvers()
    results = []
    with tempfile.TemporaryDirectory(prefix="benchmark_hac_") as tmp:
        for seed in args.seeds:
            steps, seconds = first_success(seed, args.max_steps, args.threshold, args.overrides, Path(tmp))
            results.append((seed, steps, seconds))
            shown = "not reached" if steps is None else f"{steps} env steps, {seconds:.0f} s"
            print(f"seed {seed}: test/success_rate >= {args.threshold}: {shown}", flush=True)
    hits = [(steps, seconds) for _, steps, seconds in results if steps is not None]
    print(f"reached in {len(hits)}/{len(results)} seeds within {args.max_steps} env steps")
    if hits:
        print(
            f"median over reaching seeds: {statistics.median(s for s, _ in hits):.0f} env steps, "
            f"{statistics.median(w for _, w in hits):.0f} s"
        )
    command = " ".join(["python experiment/benchmark_hac.py", "--seeds", *map(str, args.seeds), *args.overrides])
    print(f"reproduce: {command}")


if __name__ == "__main__":
    main()
