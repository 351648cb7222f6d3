"""Re-test a finished (or interrupted) run from its checkpoint on many more episodes than training's tests.

    python experiment/evaluate.py <run dir> [--episodes 100] [--seed N] [--json]

A training run's `test/success_rate` comes from `n_test_rollouts` episodes (10 by default), so one test moves
by 0.2-0.4 between epochs on the mazes. This loads `<run dir>/config.yaml` and `<run dir>/checkpoint/` (model
and observation statistics; the replay buffer is not needed), runs `--episodes` deterministic episodes on a
fresh env seeded `--seed` (default: the run's seed + 30000; see experiment/saved_run.py, apart from training's test env at + 10000 and its
video env at + 20000) with the same test protocol as training (util/evaluation.py), and prints the success rate
with its 95% Wilson interval, the mean return and episode length, and HAC's per-layer `test_layer{i}/...`
metrics. Nothing is written. A missing run directory, config or checkpoint exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.vec_env import VecNormalize

from experiment.saved_run import (
    RETEST_SEED_OFFSET,
    load_model,
    load_run_config,
    make_run_env,
    require_checkpoint,
    restore_normalization,
)
from interface.algorithms import get_algorithm
from interface.envs import resolve_env_id
from util.errors import ConfigError
from util.evaluation import evaluate
from util.model_protocol import EpisodicModel


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a success rate: unlike the normal approximation it stays inside [0, 1]
    and is not empty at 0 or n successes (about 95% coverage for z = 1.96)."""
    if n <= 0:
        raise ValueError("n must be positive")
    rate = successes / n
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def evaluate_run(run_dir: Path, episodes: int, seed: int | None = None) -> dict[str, Any]:
    """Load a run's checkpoint and run `episodes` deterministic test episodes; returns the metrics.

    Keys: `test/success_rate`, `test/mean_reward`, `test/ep_length` (as in training), `test/success_low` and
    `test/success_high` (95% Wilson interval), `episodes`, `seed`, `env_steps` (the checkpoint's), and for HAC
    every `test_layer{i}/...` metric over these episodes.
    """
    if episodes < 1:
        raise ConfigError("--episodes", f"must be at least 1, got {episodes}")
    cfg = load_run_config(run_dir)
    checkpoint = require_checkpoint(run_dir)
    seed = int(cfg.seed) + RETEST_SEED_OFFSET if seed is None else seed
    spec = get_algorithm(cfg.algorithm.name)
    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    env = make_run_env(cfg, resolve_env_id(cfg.env), seed)
    try:
        env = restore_normalization(env, checkpoint, required=True)
        if isinstance(env, VecNormalize):
            env.training = False
        model = load_model(cfg, spec, checkpoint, env, with_replay_buffer=False)
        env.seed(seed)  # binding a model may reset the env, which would use up the seed's first episode
        metrics: dict[str, Any] = evaluate(model, env, env, episodes)
        if isinstance(model, EpisodicModel):
            metrics.update({k: v for k, v in model.epoch_metrics().items() if k.startswith("test_")})
    finally:
        env.close()
    low, high = wilson_interval(round(metrics["test/success_rate"] * episodes), episodes)
    metrics.update(
        {
            "test/success_low": low,
            "test/success_high": high,
            "episodes": episodes,
            "seed": seed,
            "env_steps": int(checkpoint.state.get("env_steps", 0)),
        }
    )
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate one run directory and print a summary line (or `--json`); exit 2 on bad input."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory of experiment/train.py (with checkpoint/)")
    parser.add_argument("--episodes", type=int, default=100, help="deterministic test episodes (default 100)")
    parser.add_argument(
        "--seed", type=int, default=None, help=f"test env seed (default: run seed + {RETEST_SEED_OFFSET})"
    )
    parser.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    args = parser.parse_args(argv)
    try:
        metrics = evaluate_run(args.run_dir, args.episodes, args.seed)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"run_dir": str(args.run_dir), **metrics}))
        return 0
    print(
        f"{args.run_dir}: success {metrics['test/success_rate']:.3f} "
        f"(95% CI {metrics['test/success_low']:.3f}-{metrics['test/success_high']:.3f}) over {args.episodes} "
        f"episodes after {metrics['env_steps']} env steps; mean return {metrics['test/mean_reward']:.1f}, "
        f"episode length {metrics['test/ep_length']:.1f}"
    )
    for key in sorted(k for k in metrics if k.startswith("test_layer")):
        print(f"  {key} {metrics[key]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
