"""Cross-entropy search for the open-loop +x gait of the ants' scripted solver (ideas_envs/scripted_solvers.py).

    python experiment/benchmarks/ant_gait_search.py [--iterations 25] [--population 48] [--seed 0]

A gait is 25 numbers: per actuator (ant.xml order) offset + amplitude * sin(omega * step + phase), one omega for
all. Each candidate walks ``--steps`` env steps of AntReacher-v1 from ``--starts`` reset seeds; its score is the
mean +x distance of the torso minus ``--drift-cost`` times the mean |y| drift, and an ant that ends upside down
scores ``-FLIP_PENALTY``. The search keeps the best ``--elites`` of each population, refits a diagonal Gaussian
to them and prints the best gait found; its numbers go into ``GAIT_*`` of ideas_envs/scripted_solvers.py.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import ideas_envs.register_envs  # noqa: F401  (registers AntReacher-v1)
from ideas_envs.ant_goal_env import AntGoalEnv

FLIP_PENALTY = 10.0
# Search box per parameter: omega (rad per env step), 8 amplitudes, 8 phases, 8 offsets.
LOW = np.concatenate([[0.3], np.zeros(8), np.full(8, -np.pi), np.full(8, -1.0)])
HIGH = np.concatenate([[3.0], np.ones(8), np.full(8, np.pi), np.ones(8)])


def gait_score(env: AntGoalEnv, params: np.ndarray, starts: list[int], steps: int, drift_cost: float) -> float:
    """Mean over start seeds of +x distance minus drift_cost * |y drift|; -FLIP_PENALTY if the ant flips."""
    omega, amplitude, phase, offset = params[0], params[1:9], params[9:17], params[17:25]
    scores = []
    for seed in starts:
        env.reset(seed=seed)
        start = env.torso_xy()
        for step in range(steps):
            env.step(np.clip(offset + amplitude * np.sin(omega * step + phase), -1.0, 1.0).astype(np.float32))
        if not env.is_upright():
            return -FLIP_PENALTY
        moved = env.torso_xy() - start
        scores.append(moved[0] - drift_cost * abs(moved[1]))
    return float(np.mean(scores))


def main() -> None:
    """Run the cross-entropy search and print the best gait as Python constants."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--population", type=int, default=48)
    parser.add_argument("--elites", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100, help="env steps per walk (0.1 s each)")
    parser.add_argument("--starts", type=int, nargs="+", default=[1000, 1001])
    parser.add_argument("--drift-cost", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    env = gym.make("AntReacher-v1").unwrapped
    mean, std = (LOW + HIGH) / 2, (HIGH - LOW) / 4
    best_params, best_score = mean, -np.inf
    for iteration in range(args.iterations):
        population = np.clip(mean + std * rng.standard_normal((args.population, len(mean))), LOW, HIGH)
        scores = np.array([gait_score(env, p, args.starts, args.steps, args.drift_cost) for p in population])
        elites = population[np.argsort(scores)[-args.elites :]]
        mean, std = elites.mean(axis=0), elites.std(axis=0) + 0.02 * (HIGH - LOW)
        if scores.max() > best_score:
            best_score, best_params = float(scores.max()), population[np.argmax(scores)]
        print(
            f"iteration {iteration}: best {scores.max():.2f} m, elite mean {np.sort(scores)[-args.elites :].mean():.2f} m"
        )
    print(f"best score {best_score:.2f} m in {args.steps} steps")
    for name, values in (("AMPLITUDE", best_params[1:9]), ("PHASE", best_params[9:17]), ("OFFSET", best_params[17:25])):
        print(f"GAIT_{name} = np.array({np.round(values, 3).tolist()})")
    print(f"GAIT_OMEGA = {best_params[0]:.3f}")


if __name__ == "__main__":
    main()
