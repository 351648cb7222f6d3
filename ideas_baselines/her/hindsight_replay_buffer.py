"""Hindsight Experience Replay as an SB3 replay buffer: goals are relabelled when a batch is sampled."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

GOAL_SELECTION_STRATEGIES = ("future", "final", "episode")

GoalFunction = Callable[[np.ndarray, np.ndarray, Any], Any]


class CompactPickle:
    """Pickles an SB3 replay buffer with only its filled rows, so a checkpoint grows with the data, not capacity.

    Until a buffer wraps, the rows from ``pos`` on are zeros that SB3 would write out in full (a 1e6-transition
    buffer costs the same file at 10,000 transitions as at 1,000,000); they are cut off when pickled and
    allocated again when unpickled.
    """

    buffer_size: int
    pos: int
    full: bool

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self.full:
            return state
        compacted = []
        for key, value in state.items():
            if _rows(value, self.buffer_size):
                state[key] = value[: self.pos]
                compacted.append(key)
            elif isinstance(value, dict) and value and all(_rows(part, self.buffer_size) for part in value.values()):
                state[key] = {name: part[: self.pos] for name, part in value.items()}
                compacted.append(key)
        state["_compacted"] = compacted
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key in state.pop("_compacted", ()):
            parts = state[key] if isinstance(state[key], dict) else {None: state[key]}
            padded = {}
            for name, part in parts.items():
                padded[name] = np.zeros((state["buffer_size"], *part.shape[1:]), dtype=part.dtype)
                padded[name][: len(part)] = part
            state[key] = padded if isinstance(state[key], dict) else padded[None]
        self.__dict__.update(state)


def _rows(value: Any, buffer_size: int) -> bool:
    """Whether `value` is a per-transition array of a buffer with `buffer_size` rows."""
    return isinstance(value, np.ndarray) and value.shape[:1] == (buffer_size,)


class CompactDictReplayBuffer(CompactPickle, DictReplayBuffer):
    """SB3's DictReplayBuffer, pickled with only its filled rows."""


class HindsightBatch(NamedTuple):
    """One sampled batch in raw (unnormalised) numpy form, with where every transition and goal came from."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    next_observations: dict[str, np.ndarray]
    rewards: np.ndarray
    terminals: np.ndarray
    transition_index: np.ndarray
    env_index: np.ndarray
    goal_index: np.ndarray
    relabelled: np.ndarray


class FlatBatch(NamedTuple):
    """A sampled batch as the flat network input: every Dict key concatenated (in the space's key order),
    normalised, observations in rows [0, n) and next observations in rows [n, 2n) of one tensor."""

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    dones: th.Tensor


class HindsightReplayBuffer(CompactPickle, DictReplayBuffer):
    """Replay buffer for goal-conditioned envs that relabels desired goals with achieved ones at sampling time.

    Hindsight Experience Replay (Andrychowicz et al. 2017, https://arxiv.org/abs/1707.01495). A fraction
    ``k / (k + 1)`` of every batch gets its desired goal replaced by a goal achieved later in the same episode
    (or at its end, or anywhere in it). Rewards of relabelled transitions are recomputed in one vectorised call
    of the env's ``compute_reward``; their terminal flags come from the env's ``compute_terminated`` for the new
    goal (SB3 issue #627: a relabelled transition must not inherit the terminal flag of the original goal), and
    time-limit truncations never count as terminal. Only complete episodes are sampled.

    The env's goal functions are attached with :meth:`attach_goal_functions` after construction, because SB3
    builds the buffer itself and pickles its kwargs with the model; they are dropped when the buffer is pickled,
    which writes only the filled rows (:class:`CompactPickle`).

    :param buffer_size: Max number of transitions stored.
    :param observation_space: Dict space with ``observation``, ``achieved_goal`` and ``desired_goal``.
    :param action_space: Action space.
    :param device: Torch device of the sampled tensors.
    :param n_envs: Number of parallel envs feeding the buffer.
    :param optimize_memory_usage: Not supported (SB3's dict buffers do not support it either).
    :param handle_timeout_termination: Treat ``TimeLimit.truncated`` as not terminal.
    :param n_sampled_goal: k, relabelled goals per real goal.
    :param goal_selection_strategy: ``future`` (a goal achieved at or after this step), ``final`` (the
        episode's last achieved goal) or ``episode`` (any achieved goal of the episode).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
    ) -> None:
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        if goal_selection_strategy not in GOAL_SELECTION_STRATEGIES:
            raise ValueError(f"goal_selection_strategy must be one of {GOAL_SELECTION_STRATEGIES}")
        if n_sampled_goal < 0:
            raise ValueError("n_sampled_goal must be >= 0")
        self.n_sampled_goal = n_sampled_goal
        self.goal_selection_strategy = goal_selection_strategy
        self.relabel_probability = n_sampled_goal / (n_sampled_goal + 1)
        # Every stored transition knows the start and (once it is complete) the length of its episode;
        # a length of 0 marks a transition that must not be sampled.
        self.ep_start = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self.ep_length = np.zeros((self.buffer_size, self.n_envs), dtype=np.int64)
        self._current_ep_start = np.zeros(self.n_envs, dtype=np.int64)
        self._sampleable: np.ndarray | None = None  # flat indices of complete-episode transitions, None = stale
        self._compute_reward: GoalFunction | None = None
        self._compute_terminated: GoalFunction | None = None

    def attach_goal_functions(self, compute_reward: GoalFunction, compute_terminated: GoalFunction | None) -> None:
        """Give the buffer the env's vectorised ``compute_reward`` (and ``compute_terminated`` if it has one)."""
        self._compute_reward = compute_reward
        self._compute_terminated = compute_terminated

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_compute_reward"] = None
        state["_compute_terminated"] = None
        state["_sampleable"] = None
        return state

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one step of every env and close the episodes that ended with it."""
        if self.full:
            self._forget_episodes_at(self.pos)
        position = self.pos
        self.ep_start[position] = self._current_ep_start
        super().add(obs, next_obs, action, reward, done, infos)
        for env_index in np.flatnonzero(done):
            self._close_episode(env_index, position)

    def _close_episode(self, env_index: int, last_position: int) -> None:
        start = self._current_ep_start[env_index]
        end = last_position + 1 if last_position >= start else last_position + 1 + self.buffer_size
        indices = np.arange(start, end) % self.buffer_size
        self.ep_length[indices, env_index] = end - start
        self._current_ep_start[env_index] = self.pos
        self._sampleable = None

    def _forget_episodes_at(self, position: int) -> None:
        """Invalidate the whole episode whose transition is about to be overwritten."""
        for env_index in range(self.n_envs):
            length = self.ep_length[position, env_index]
            if length > 0:
                start = self.ep_start[position, env_index]
                self.ep_length[np.arange(start, start + length) % self.buffer_size, env_index] = 0
                self._sampleable = None

    def truncate_last_trajectory(self) -> None:
        """Drop the unfinished episode of every env, e.g. before saving for a resume that restarts episodes."""
        for env_index in range(self.n_envs):
            start = self._current_ep_start[env_index]
            if start != self.pos:
                indices = np.arange(start, self.pos if self.pos > start else self.pos + self.buffer_size)
                self.ep_length[indices % self.buffer_size, env_index] = 0
                self._sampleable = None
            self._current_ep_start[env_index] = self.pos

    def n_complete_transitions(self) -> int:
        """How many stored transitions belong to complete episodes (and so can be sampled)."""
        return int(self._sampleable_indices().size)

    def _sampleable_indices(self) -> np.ndarray:
        """Flat (position * n_envs + env) indices of transitions in complete episodes, cached until one changes."""
        if self._sampleable is None:
            upper = self.buffer_size if self.full else self.pos
            self._sampleable = np.flatnonzero(self.ep_length[:upper].ravel())
        return self._sampleable

    def sample_transitions(self, batch_size: int) -> HindsightBatch:
        """Sample ``batch_size`` transitions from complete episodes and relabel a fraction of their goals."""
        if self._compute_reward is None:
            raise RuntimeError("call attach_goal_functions(env.compute_reward, ...) before sampling")
        upper = self.buffer_size if self.full else self.pos
        valid = self._sampleable_indices()
        if valid.size == 0:
            # Learning started before any episode ended (long episodes, small learning_starts): replay the
            # stored steps as they happened until there is an episode to relabel from.
            if upper == 0:
                raise RuntimeError("the replay buffer is empty")
            flat = np.random.randint(0, upper * self.n_envs, size=batch_size)
            return self._gather(*np.divmod(flat, self.n_envs), np.zeros(batch_size, dtype=bool))
        flat = valid[np.random.randint(0, valid.size, size=batch_size)]
        transition_index, env_index = np.divmod(flat, self.n_envs)

        start = self.ep_start[transition_index, env_index]
        length = self.ep_length[transition_index, env_index]
        step_in_episode = (transition_index - start) % self.buffer_size
        if self.goal_selection_strategy == "future":
            goal_offset = np.random.randint(step_in_episode, length)
        elif self.goal_selection_strategy == "final":
            goal_offset = length - 1
        else:
            goal_offset = np.random.randint(0, length)
        relabelled = np.random.uniform(size=batch_size) < self.relabel_probability
        batch = self._gather(transition_index, env_index, relabelled)
        batch.goal_index[relabelled] = ((start + goal_offset) % self.buffer_size)[relabelled]

        if relabelled.any():
            new_goals = self.next_observations["achieved_goal"][batch.goal_index[relabelled], env_index[relabelled]]
            batch.observations["desired_goal"][relabelled] = new_goals
            batch.next_observations["desired_goal"][relabelled] = new_goals
            achieved = batch.next_observations["achieved_goal"][relabelled]
            infos = [{} for _ in range(len(new_goals))]
            batch.rewards[relabelled] = _vectorised(self._compute_reward, achieved, new_goals, infos, "compute_reward")
            if self._compute_terminated is not None:
                batch.terminals[relabelled] = _vectorised(
                    self._compute_terminated, achieved, new_goals, infos, "compute_terminated"
                )
        return batch

    def _gather(self, transition_index: np.ndarray, env_index: np.ndarray, relabelled: np.ndarray) -> HindsightBatch:
        """The stored transitions at these indices, as they happened (goal index = own index)."""
        return HindsightBatch(
            observations={key: value[transition_index, env_index] for key, value in self.observations.items()},
            actions=self.actions[transition_index, env_index],
            next_observations={
                key: value[transition_index, env_index] for key, value in self.next_observations.items()
            },
            rewards=self.rewards[transition_index, env_index].astype(np.float32),
            terminals=(
                self.dones[transition_index, env_index] * (1 - self.timeouts[transition_index, env_index])
            ).astype(np.float32),
            transition_index=transition_index,
            env_index=env_index,
            goal_index=transition_index.copy(),
            relabelled=relabelled,
        )

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> DictReplayBufferSamples:  # type: ignore[override]
        """Sample a relabelled batch as torch tensors, normalised by ``env`` if it is a ``VecNormalize``."""
        batch = self.sample_transitions(batch_size)
        observations = self._normalize_obs(batch.observations, env)
        next_observations = self._normalize_obs(batch.next_observations, env)
        assert isinstance(observations, dict) and isinstance(next_observations, dict)
        return DictReplayBufferSamples(
            observations={key: self.to_torch(value) for key, value in observations.items()},
            actions=self.to_torch(batch.actions),
            next_observations={key: self.to_torch(value) for key, value in next_observations.items()},
            dones=self.to_torch(batch.terminals.reshape(-1, 1)),
            rewards=self.to_torch(self._normalize_reward(batch.rewards.reshape(-1, 1), env)),
        )

    def sample_flat(self, batch_size: int, env: VecNormalize | None = None) -> FlatBatch:
        """Sample a relabelled batch as one flat, normalised observation tensor (see :class:`FlatBatch`).

        The same transitions and relabelling as :meth:`sample`, with one normalisation and one tensor
        conversion instead of one per key, for learners that concatenate the keys anyway.
        """
        batch = self.sample_transitions(batch_size)
        keys = list(self.observations)
        halves = [np.concatenate([batch.observations[key], batch.next_observations[key]]) for key in keys]
        flat = np.concatenate([half.reshape(2 * batch_size, -1) for half in halves], axis=1)
        mean, std, clip = _flat_normalizer(keys, [int(np.prod(self.obs_shape[key])) for key in keys], env)
        flat = np.clip((flat - mean) / std, -clip, clip).astype(np.float32)
        return FlatBatch(
            observations=th.from_numpy(flat).to(self.device),
            actions=self.to_torch(batch.actions),
            rewards=self.to_torch(self._normalize_reward(batch.rewards.reshape(-1, 1), env)),
            dones=self.to_torch(batch.terminals.reshape(-1, 1)),
        )


def _flat_normalizer(
    keys: list[str], sizes: list[int], env: VecNormalize | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, standard deviation and clip bound of VecNormalize's observation normalisation, per flat column."""
    means, stds = [], []
    normalized = env is not None and env.norm_obs
    for key, size in zip(keys, sizes):
        if normalized and key in env.norm_obs_keys:  # type: ignore[union-attr]
            statistics = env.obs_rms[key]  # type: ignore[union-attr,index]
            means.append(np.asarray(statistics.mean, dtype=np.float64).reshape(-1))
            variance = np.asarray(statistics.var, dtype=np.float64).reshape(-1)
            stds.append(np.sqrt(variance + env.epsilon))  # type: ignore[union-attr]
        else:
            means.append(np.zeros(size))
            stds.append(np.ones(size))
    clip = env.clip_obs if normalized else np.inf  # type: ignore[union-attr]
    return np.concatenate(means), np.concatenate(stds), clip


def _vectorised(
    function: GoalFunction, achieved: np.ndarray, desired: np.ndarray, infos: list, name: str
) -> np.ndarray:
    """Call a goal function on a batch; a scalar answer applies to every row, a per-row loop is the fallback."""
    n = len(achieved)
    try:
        result = np.asarray(function(achieved, desired, infos), dtype=np.float32)
    except (ValueError, TypeError):
        result = np.asarray([function(a, d, i) for a, d, i in zip(achieved, desired, infos)], dtype=np.float32)
    if result.ndim == 0:
        return np.full(n, float(result), dtype=np.float32)
    if result.shape != (n,):
        raise ValueError(f"env.{name} returned shape {result.shape} for a batch of {n}; it must be vectorised")
    return result
