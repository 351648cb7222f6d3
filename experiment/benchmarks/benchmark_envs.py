"""Benchmark: env steps per second of every ideas_envs id against its gymnasium-robotics peer, on one core.

    python experiment/benchmarks/benchmark_envs.py [--steps 3000] [--rounds 6] [--solver-seeds 10] [--cpu 0] [--ids ID ...]

Steps each env (as `gym.make` builds it, time limit included) with seeded random actions, resetting at episode
end, pinned to one CPU core, in chunks alternating with chunks of its peer (FetchPush-v4 for the Fetch-based envs,
AntMaze_UMaze-v5 for the ants) so that other load on the machine slows both alike; ratio = ours / peer's. Also
runs each env's scripted solver (ideas_envs.scripted_solvers) on --solver-seeds seeds. Prints a Markdown table and
the command; exits 1 if an env steps at less than 0.7 of its peer's rate.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass

import gymnasium as gym

import ideas_envs.register_envs  # noqa: F401  (registers our ids)
from ideas_envs.ant_goal_env import AntGoalEnv
from ideas_envs.fetch_goal_env import FetchGoalEnv
from ideas_envs.scripted_solvers import scripted_success

FETCH_PEER = "FetchPush-v4"
ANT_PEER = "AntMaze_UMaze-v5"
MIN_RATIO = 0.7


@dataclass
class EnvRow:
    """One line of the table."""

    env_id: str
    obs_size: int
    goal_size: int
    episode_steps: int | None
    steps_per_second: float
    peer: str | None = None
    peer_steps_per_second: float | None = None
    solver_successes: int | None = None
    solver_episodes: int = 0

    @property
    def ratio(self) -> float | None:
        """Our rate over the peer's rate."""
        return self.steps_per_second / self.peer_steps_per_second if self.peer_steps_per_second else None


class RandomStepper:
    """One env stepped with seeded random actions, resetting at episode end, timed chunk by chunk."""

    def __init__(self, env_id: str, seed: int = 0) -> None:
        self.env = gym.make(env_id)
        self.env.action_space.seed(seed)
        self.env.reset(seed=seed)
        self.steps = 0
        self.seconds = 0.0

    def run(self, n_steps: int) -> None:
        """Take `n_steps` steps and add them and their wall time to the totals."""
        started = time.perf_counter()
        for _ in range(n_steps):
            _, _, terminated, truncated, _ = self.env.step(self.env.action_space.sample())
            if terminated or truncated:
                self.env.reset()
        self.seconds += time.perf_counter() - started
        self.steps += n_steps

    @property
    def rate(self) -> float:
        """Steps per second so far."""
        return self.steps / self.seconds


def paired_rates(env_id: str, peer_id: str | None, n_steps: int, rounds: int) -> tuple[float, float | None]:
    """Steps/s of an env and of its peer, timed in alternating chunks so that load from other processes hits
    both alike."""
    ours = RandomStepper(env_id)
    peer = RandomStepper(peer_id) if peer_id else None
    for _ in range(rounds):
        if peer is not None:
            peer.run(n_steps // rounds)
        ours.run(n_steps // rounds)
    ours.env.close()
    if peer is None:
        return ours.rate, None
    peer.env.close()
    return ours.rate, peer.rate


def peer_of(env: gym.Env) -> str | None:
    """The gymnasium-robotics env ours is compared with, by robot."""
    if isinstance(env.unwrapped, FetchGoalEnv):
        return FETCH_PEER
    if isinstance(env.unwrapped, AntGoalEnv):
        return ANT_PEER
    return None


def our_ids() -> list[str]:
    """Every registered ideas_envs id."""
    return [env_id for env_id, spec in gym.registry.items() if str(spec.entry_point).startswith("ideas_envs.")]


def measure(env_ids: list[str], n_steps: int, rounds: int, solver_seeds: int) -> list[EnvRow]:
    """Each env's rate next to its peer's, and its scripted solver's success count."""
    rows = []
    for env_id in env_ids:
        env = gym.make(env_id)
        peer = peer_of(env)
        rate, peer_rate = paired_rates(env_id, peer, n_steps, rounds)
        space = env.observation_space
        row = EnvRow(
            env_id,
            space["observation"].shape[0],
            space["desired_goal"].shape[0],
            gym.spec(env_id).max_episode_steps,
            rate,
            peer,
            peer_rate,
        )
        env.close()
        if peer is not None and solver_seeds > 0:
            row.solver_successes = sum(scripted_success(env_id, seed) for seed in range(solver_seeds))
            row.solver_episodes = solver_seeds
        rows.append(row)
    return rows


def report(rows: list[EnvRow], command: str) -> None:
    """Print the Markdown table and the command."""
    columns = ["id", "obs / goal size", "episode steps", "env steps/s (1 core)", "peer", "peer steps/s", "ratio"]
    print("| " + " | ".join([*columns, "scripted solver"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
        solver = f"{row.solver_successes}/{row.solver_episodes}" if row.solver_successes is not None else "-"
        print(
            f"| `{row.env_id}` | {row.obs_size} / {row.goal_size} | {row.episode_steps} | {row.steps_per_second:.0f} "
            f"| {row.peer or '-'} | {f'{row.peer_steps_per_second:.0f}' if row.peer_steps_per_second else '-'} "
            f"| {ratio} | {solver} |"
        )
    print(f"\ncommand: {command}")


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and return 1 if an env is slower than MIN_RATIO of its peer."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="env steps timed per env (and as many of its peer)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating env/peer chunks the steps are split into")
    parser.add_argument("--solver-seeds", type=int, default=10, help="scripted-solver episodes per env (0: skip)")
    parser.add_argument("--cpu", type=int, default=0, help="the one CPU core to run on")
    parser.add_argument("--ids", nargs="*", default=None, help="our env ids to measure (default: all)")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    rows = measure(args.ids or our_ids(), args.steps, args.rounds, args.solver_seeds)
    report(rows, shlex.join([sys.executable, *sys.argv]))
    slow = [row.env_id for row in rows if row.ratio is not None and row.ratio < MIN_RATIO]
    if slow:
        print(f"slower than {MIN_RATIO} of the peer: {', '.join(slow)}", file=sys.stderr)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
