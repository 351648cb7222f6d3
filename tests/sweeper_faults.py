"""A BitFlipping env that fails on purpose, for the sweeper's crash tests (`env=tests.sweeper_faults:Faulty-v0`).

`env_kwargs.fault`: any value starting with `ok` behaves normally; `raise` raises on reset, `kill` kills its own
process with SIGKILL on reset, `nan_success` reports `is_success = NaN` (so the trial's objective is NaN),
`always_success` / `never_success` report `is_success` 1 / 0 at every step (a trial that early-stops on success
after `early_stop_last_n` epochs / one that runs all its epochs),
`sleep<seconds>` (e.g. `sleep10`) waits that long when the env is made: a trial that takes time but no CPU, for
measuring a sweep's own parallelism on a busy machine (`experiment/benchmarks/benchmark_sweep_workers.py --trial sleep`).
:func:`sweep_command` is a tiny `--multirun` over this env, as the sweeper tests start it; :func:`multirun_command`
the same without the env, for sweeps of other configs.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym

from ideas_envs.bit_flipping.bit_flipping_env import BitFlippingEnv

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class FaultyBitFlippingEnv(BitFlippingEnv):
    """BitFlipping with 4 bits whose `fault` kwarg picks how it fails (see module docstring)."""

    def __init__(self, fault: str = "ok") -> None:
        super().__init__(n_bits=4)
        self.fault = fault
        if fault.startswith("sleep"):
            time.sleep(float(fault.removeprefix("sleep")))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset, or fail as configured."""
        if self.fault == "raise":
            raise RuntimeError("FaultyBitFlippingEnv: failing on purpose")
        if self.fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        """Step; faults `nan_success`, `always_success` and `never_success` replace the success flag."""
        observation, reward, terminated, truncated, info = super().step(action)
        forced = {"nan_success": math.nan, "always_success": 1.0, "never_success": 0.0}
        if self.fault in forced:
            info = {**info, "is_success": forced[self.fault]}
        return observation, reward, terminated, truncated, info


if "Faulty-v0" not in gym.registry:
    gym.register(id="Faulty-v0", entry_point=FaultyBitFlippingEnv, max_episode_steps=4)


def multirun_command(tmp: Path, *args: str, name: str = "sweep") -> tuple[list[str], dict[str, str]]:
    """Command and environment of a `train.py --multirun` with overrides `args` in `tmp` (sweep dir `tmp/<name>`).

    MLflow goes to `tmp/<name>-mlflow.db` (`tmp/mlflow.db` for the default name), Comet is off and there is no
    API key (HOME is `tmp`), no progress bar.
    """
    mlflow_db = tmp / ("mlflow.db" if name == "sweep" else f"{name}-mlflow.db")
    command = [
        sys.executable,
        str(PROJECT_ROOT / "experiment" / "train.py"),
        "--multirun",
        "progress_bar=false",
        "comet.mode=off",
        f"mlflow.tracking_uri=sqlite:///{mlflow_db}",
        f"base_logdir={tmp / 'data'}",
        f"hydra.sweep.dir={tmp / name}",
        *args,
    ]
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), PYTHONUNBUFFERED="1", HOME=str(tmp))
    env.pop("COMET_API_KEY", None)
    return command, env


def sweep_command(tmp: Path, *args: str, name: str = "sweep") -> tuple[list[str], dict[str, str]]:
    """Command and environment of a 2-epoch DQN `--multirun` on Faulty-v0 in `tmp` (see :func:`multirun_command`).

    `args` are further overrides; the study is `faults` and the search space only what `args` sweep.
    """
    faulty = [
        "env=tests.sweeper_faults:Faulty-v0",
        "~search_space",
        "algorithm.model_class=dqn",
        "n_epochs=2",
        "eval_after_n_steps=100",
        "n_test_rollouts=2",
        "algorithm.learner.learning_starts=50",
        "hydra.sweeper.study_name=faults",
    ]
    return multirun_command(tmp, *faulty, *args, name=name)
