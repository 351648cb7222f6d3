"""Training throughput of our HER-SAC loop against SB3's SAC+HER loop, and where one env step's time goes.

Both loops get the network, batch size and every other setting of our HER-SAC config (conf/algorithm/her.yaml on
FetchReach-v4 by default; `--override` adds Hydra overrides, e.g. a preset `+tuned=FetchPush-v4` or
`algorithm.learner.batch_size=512`), the same gradient steps per env step and torch threads (`--torch-threads`, default 1). Per seed they run
alternately: `learning_starts` warm-up steps (not timed), then `--steps` timed env steps of `learn`.
SB3's loop is stable-baselines3's SAC with its HerReplayBuffer on an in-process env; ours is what
`python experiment/train.py` builds (FusedSAC, our HER buffer, the env in its own process when
`env_subprocess` resolves to true); "before" is our loop before the speed-ups (SB3's SAC with our HER buffer,
in-process env). Prints env steps/s per run, medians and the ratio ours/SB3, then a profile (milliseconds per
env step by part) of one run of each.

    python experiment/benchmarks/benchmark_throughput.py [--seeds 0 1 2] [--steps 3000] [--n-critics 1]
        [--override KEY=VALUE ...] [--torch-threads 1] [--no-profile]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import set_random_seed

from experiment.cli import register_resolvers
from experiment.saved_run import uses_env_subprocess
from ideas_baselines.her import HindsightReplayBuffer
from interface.algorithms import get_algorithm
from interface.envs import goal_functions, make_vec_env
from interface.learner_config import her_buffer_kwargs, learner_kwargs
from util.run_info import PROJECT_ROOT

PARTS = (
    "env step",
    "policy inference",
    "HER sampling + rewards",
    "gradient update",
    "store transition",
    "callbacks, logging, rest",
)


def our_config(n_critics: int | None, overrides: list[str]) -> DictConfig:
    """Our HER-SAC training config (conf/main.yaml with `overrides`), with `n_critics` critics if given."""
    register_resolvers()
    critics = [] if n_critics is None else [f"algorithm.per_model_class.sac.policy_kwargs.n_critics={n_critics}"]
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base="1.3"):
        cfg = compose("main", overrides=[*overrides, *critics])
    if cfg.algorithm.name != "her" or cfg.algorithm.model_class != "sac":
        raise SystemExit("error: --override: the loops compared are HER-SAC (algorithm=her, model_class=sac)")
    return cfg


def build_ours(cfg: DictConfig, seed: int) -> BaseAlgorithm:
    """The model `experiment/train.py` trains by default, on the env it would build."""
    spec = get_algorithm("her")
    env = make_vec_env(cfg.env, {}, seed, normalize_obs=True, subprocess=uses_env_subprocess(cfg, spec))
    return spec.build(cfg.algorithm, env, seed, "cpu")


def build_sb3(cfg: DictConfig, seed: int) -> BaseAlgorithm:
    """SB3's SAC with its HerReplayBuffer, on an in-process env, with our config's settings."""
    env = make_vec_env(cfg.env, {}, seed, normalize_obs=True)
    kwargs = learner_kwargs(cfg.algorithm, "sac", env.action_space, env.observation_space)
    kwargs["replay_buffer_class"] = HerReplayBuffer
    kwargs["replay_buffer_kwargs"] = {
        "n_sampled_goal": cfg.algorithm.n_sampled_goal,
        "goal_selection_strategy": cfg.algorithm.goal_selection_strategy,
    }
    return SAC(env=env, seed=seed, device="cpu", verbose=0, **kwargs)


def build_before(cfg: DictConfig, seed: int) -> BaseAlgorithm:
    """Our loop before the speed-ups: SB3's SAC with our HER buffer, on an in-process env."""
    env = make_vec_env(cfg.env, {}, seed, normalize_obs=True)
    kwargs = learner_kwargs(cfg.algorithm, "sac", env.action_space, env.observation_space)
    model = SAC(
        env=env,
        seed=seed,
        device="cpu",
        verbose=0,
        replay_buffer_class=HindsightReplayBuffer,
        replay_buffer_kwargs=her_buffer_kwargs(cfg.algorithm),
        **kwargs,
    )
    model.replay_buffer.attach_goal_functions(*goal_functions(env))  # type: ignore[union-attr]
    return model


LOOPS: dict[str, Callable[[DictConfig, int], BaseAlgorithm]] = {
    "sb3": build_sb3,
    "before": build_before,
    "ours": build_ours,
}


class StepProfile:
    """Wall time per part of an env step, from timers wrapped around the learner's and env's methods."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.trains_inside_env_step = False

    def wrap(self, owner: Any, name: str, key: str) -> None:
        """Time every call of `owner.name` under `key`."""
        function = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - started

        setattr(owner, name, timed)

    def attach(self, model: BaseAlgorithm) -> None:
        """Wrap the methods one env step of an off-policy SB3-style learner goes through."""
        env = model.get_env()
        assert env is not None and model.replay_buffer is not None  # type: ignore[attr-defined]
        self.wrap(env, "step_async", "env")
        self.wrap(env, "step_wait", "env")
        self.wrap(model, "_sample_action", "policy inference")
        self.wrap(model, "_store_transition", "store transition")
        self.wrap(model, "_fused_train" if hasattr(model, "_fused_train") else "train", "train")
        buffer = model.replay_buffer  # type: ignore[attr-defined]
        for name in ("sample", "sample_flat"):  # neither calls the other
            if hasattr(buffer, name):
                self.wrap(buffer, name, "sampling")
        overlapping = getattr(model, "_overlapping", None)
        self.trains_inside_env_step = bool(overlapping and overlapping())

    def per_step_ms(self, total_seconds: float, steps: int) -> dict[str, float]:
        """Milliseconds per env step of each part in PARTS (nested timers separated)."""
        s = self.seconds
        train = s["train"]
        # An overlapping learner trains inside the env wrapper's step_wait, while the env computes.
        env = s["env"] - train if self.trains_inside_env_step else s["env"]
        parts = {
            "env step": env,
            "policy inference": s["policy inference"],
            "HER sampling + rewards": s["sampling"],
            "gradient update": train - s["sampling"],
            "store transition": s["store transition"],
        }
        parts["callbacks, logging, rest"] = total_seconds - sum(parts.values())
        return {key: 1000 * value / steps for key, value in parts.items()}


def run(loop: str, cfg: DictConfig, seed: int, steps: int, profile: StepProfile | None = None) -> float:
    """Env steps per second of `loop` over `steps` env steps after `learning_starts` untimed warm-up steps."""
    set_random_seed(seed)
    model = LOOPS[loop](cfg, seed)
    try:
        model.learn(model.learning_starts)  # type: ignore[attr-defined]
        if profile is not None:
            profile.attach(model)
        started = time.perf_counter()
        model.learn(steps, reset_num_timesteps=False)
        seconds = time.perf_counter() - started
    finally:
        model.get_env().close()  # type: ignore[union-attr]
    if profile is not None:
        profile.seconds["total"] = seconds
    return steps / seconds


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=3000, help="timed env steps per run (after warm-up)")
    parser.add_argument("--n-critics", type=int, default=None, help="critics of both loops (default: the config's)")
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides of the HER-SAC config")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-part profile")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads of both loops")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    cfg = our_config(args.n_critics, args.override)
    settings = OmegaConf.to_container(cfg.algorithm, resolve=True)
    print(f"{cfg.env}, settings of both loops: {settings}", flush=True)
    rates: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    for seed in args.seeds:
        for loop in LOOPS:
            rate = run(loop, cfg, seed, args.steps)
            rates[loop].append(rate)
            print(f"{loop:>5} seed {seed}: {rate:7.1f} env steps/s", flush=True)
    medians = {loop: statistics.median(values) for loop, values in rates.items()}
    print(
        f"\nmedian env steps/s: SB3 {medians['sb3']:.1f}, before {medians['before']:.1f}, ours {medians['ours']:.1f}; "
        f"ratio ours/SB3 {medians['ours'] / medians['sb3']:.2f}, ours/before {medians['ours'] / medians['before']:.2f}"
    )
    if args.no_profile:
        print(
            f"\ncommand: python {shlex.join(['experiment/benchmarks/benchmark_throughput.py', *(argv or sys.argv[1:])])}"
        )
        return 0

    profiles = {}
    for loop in LOOPS:
        profile = StepProfile()
        run(loop, cfg, args.seeds[0], args.steps, profile)
        profiles[loop] = profile.per_step_ms(profile.seconds["total"], args.steps)
    print(f"\nprofile, ms per env step (seed {args.seeds[0]}, timers add a little overhead):")
    print(f"{'part':<28}" + "".join(f"{loop:>8}" for loop in LOOPS))
    for part in PARTS:
        print(f"{part:<28}" + "".join(f"{profiles[loop][part]:8.3f}" for loop in LOOPS))
    print(f"{'total':<28}" + "".join(f"{sum(profiles[loop].values()):8.3f}" for loop in LOOPS))
    print(
        "(ours with env_subprocess: the env computes in its own process during the gradient step; 'env step' is"
        " what is left of it: sending the action, waiting, normalising)"
    )
    print(f"\ncommand: python {shlex.join(['experiment/benchmarks/benchmark_throughput.py', *(argv or sys.argv[1:])])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
