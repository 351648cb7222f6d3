"""Start a share of training episodes from a state on the env's scripted solver's path ("demonstration resets").

A task whose first reward needs a long chain of actions (Hook: grasp the hook, put its tip behind the block, pull)
gives hindsight relabelling nothing to learn from while the chain is never completed by chance. Starting some
training episodes part of the way along a scripted solution shows the learner the later links first: a block
already pulled into reach is pushed like FetchPush's, a hook already behind the block moves it when pulled; the
value of those states then leads back to the task's own start (the resets to demonstration states of Nair et al.,
"Overcoming Exploration in Reinforcement Learning with Demonstrations", with the scripted solver as the
demonstrator). It changes the task's start distribution, so it belongs on training envs only: a test must start
where the task starts.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from ideas_envs.scripted_solvers import has_scripted_solver, scripted_controller

# Prefix length bound for an env made without a step limit.
DEFAULT_PREFIX_BOUND = 100


class ScriptedStart(gym.Wrapper):
    """With probability `prob`, reset then runs the env's scripted solver for a number of steps drawn uniformly
    below the episode's step limit (stopping early at success), and the episode starts from the state it reached.

    The episode's step budget is untouched: the solver's steps run before the first observation and are not
    part of the episode (nor of a learner's env-step count). A prefix that ends the episode (`terminated`) is
    discarded for a plain reset.
    """

    def __init__(self, env: gym.Env, prob: float) -> None:
        if not has_scripted_solver(env):
            raise ValueError(f"{env.unwrapped} has no scripted solver")
        super().__init__(env)
        self.prob = prob
        limit = env.spec.max_episode_steps if env.spec is not None else None
        self.prefix_bound = limit or DEFAULT_PREFIX_BOUND

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """The task's reset, then (with probability `prob`, drawn from the env's own generator) a scripted prefix."""
        obs, info = self.env.reset(**kwargs)
        base = self.env.unwrapped
        if base.np_random.random() >= self.prob:
            return obs, info
        controller = scripted_controller(self.env)
        for _ in range(base.np_random.integers(self.prefix_bound)):
            obs, _, terminated, _, step_info = base.step(controller())
            if terminated:
                return self.env.reset()
            if step_info.get("is_success"):
                break
        return obs, info
