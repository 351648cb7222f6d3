"""Hierarchical Actor-Critic: a stack of SB3 off-policy learners, each setting subgoals for the one below."""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import json
import zipfile
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.vec_env import VecEnv, unwrap_vec_normalize

from ideas_baselines.hac.subgoal_testing_buffer import SubgoalTestingBuffer
from util.evaluation import info_success

# Modules of the layer classes that saves name without a module.
_BARE_CLASS_MODULES = {"FusedSAC": "ideas_baselines.sac.fused_sac"}

Observation = dict[str, np.ndarray]


@dataclass
class HacSettings:
    """The hierarchy's own settings (the learners carry theirs).

    :param time_scales: H of every layer, lowest layer first: how many actions a layer takes per sub-episode.
    :param subgoal_low: Lower bound of the subgoal (achieved-goal) space.
    :param subgoal_high: Upper bound of the subgoal space.
    :param subgoal_test_perc: lambda, the probability that a proposed subgoal is tested (layers below greedy).
    :param end_on_success: End the env episode (reset) as soon as the env's goal is reached during training.
    :param bound_q: Clamp each layer's target Q-values to [-H, 0] (the paper bounds its critics' output).
    :param seed: Seed of subgoal testing and warm-up actions.
    :param relative_subgoals: False: a layer above 0 proposes a point of the subgoal space (the paper). True: its
        action is an offset from the achieved goal at the time (bounded by its action space), and the subgoal
        is that point clipped to the subgoal bounds (relative subgoals as in HIRO, Nachum et al. 2018).
    :param dense_hindsight: Layers above 0 also store hindsight-action transitions that start at every env
        step of their run, not only where their own actions started (see :meth:`HierarchicalActorCritic._store_shifted_chains`).
    :param subgoal_threshold: None: every layer judges its goal by the env's success test. A distance d: the
        layers below the top count a subgoal reached, and are rewarded 0, when the achieved goal is within
        Euclidean distance d of it; the top layer keeps the env's test (the HAC authors' code also judges
        subgoals by thresholds separate from the end goal's). A d below the env's own tolerance makes the
        layer below stop inside the region the layer above aims at rather than at its rim.
    """

    time_scales: list[int]
    subgoal_low: list[float]
    subgoal_high: list[float]
    subgoal_test_perc: float = 0.3
    end_on_success: bool = False
    bound_q: bool = True
    seed: int = 0
    relative_subgoals: bool = False
    dense_hindsight: bool = False
    subgoal_threshold: float | None = None


@dataclass
class LayerStats:
    """Counts over one layer's sub-episodes since the last :meth:`HierarchicalActorCritic.epoch_metrics`."""

    sub_episodes: int = 0
    reached: int = 0
    tested: int = 0
    penalised: int = 0
    env_steps: int = 0
    goal_distance: float = 0.0  # summed over sub-episodes, from the achieved goal at their start to their goal


@dataclass
class _Rollout:
    """What the nested layers share while one top-layer run unfolds in the env."""

    obs: Observation
    goals: list[np.ndarray]
    training: bool
    stats: list[LayerStats]
    env_done: bool = False
    steps: int = 0  # env steps taken so far in this run
    path: list[Observation] = field(default_factory=list)  # every env step's raw observation, while training


class _LayerLogger(Logger):
    """Forwards one layer learner's `train/<name>` records to the shared logger as `train/layer{i}/<name>`."""

    def __init__(self, parent: Logger, layer: int) -> None:
        super().__init__(folder=None, output_formats=[])
        self.parent = parent
        self.layer = layer

    def _rename(self, key: str) -> str:
        section, _, name = key.partition("/")
        return f"{section}/layer{self.layer}/{name}" if name else f"layer{self.layer}/{key}"

    def record(self, key: str, value: Any, exclude: str | tuple[str, ...] | None = None) -> None:
        """Record under the layer's name in the shared logger."""
        self.parent.record(self._rename(key), value, exclude)

    def record_mean(self, key: str, value: float | None, exclude: str | tuple[str, ...] | None = None) -> None:
        """Record a running mean under the layer's name in the shared logger."""
        self.parent.record_mean(self._rename(key), value, exclude)


class HierarchicalActorCritic:
    """Hierarchical Actor-Critic (Levy, Konidaris, Platt, Saenko, ICLR 2019, https://arxiv.org/abs/1712.00948).

    Layer i (0 = lowest) is one SB3 off-policy learner. The top layer pursues the env's desired goal; every
    higher layer's action is a subgoal (a point of the achieved-goal space) for the layer below, which acts
    for at most H attempts or until a goal at its level or above is reached, by the env's own success test
    (`compute_reward == 0`, or a distance for subgoals with ``subgoal_threshold``); layer 0 acts in the env.
    Each layer stores, per action:

    - a hindsight-action transition: a missed subgoal is replaced by the goal actually achieved;
    - hindsight-goal transitions: HER inside the layer's sub-episode (:class:`SubgoalTestingBuffer`);
    - a subgoal-testing transition: with probability lambda the layers below act greedily; a tested subgoal
      that is missed after the layer below used all its H attempts earns reward -H and is terminal.

    Transitions whose goal is reached are terminal. With ``bound_q`` the target critics' values are clamped to
    [-H, 0], so Q targets stay in the range -1/0 rewards allow (for SAC before its entropy term). With one layer (H = episode length) this is flat HER.

    The API follows SB3 where the epoch loop relies on it: :meth:`learn` with callbacks that see ``dones`` and
    ``infos`` every env step, :meth:`predict`, :meth:`save` / :meth:`load`, :meth:`save_replay_buffer` /
    :meth:`load_replay_buffer`, ``num_timesteps`` (env steps) and :meth:`set_logger`. Only one env is supported.
    With a ``VecNormalize`` env the hierarchy works on raw observations and normalises each layer's input.

    :param env: The (possibly normalised) vectorised goal env with one env.
    :param learners: One learner per layer, lowest first; each has a :class:`SubgoalTestingBuffer`, the env's
        observation space and, above layer 0, a Box action space with the subgoal bounds.
    :param settings: The hierarchy's settings.
    :param num_timesteps: Env steps taken so far (when resuming a saved hierarchy).
    """

    def __init__(
        self, env: VecEnv, learners: list[OffPolicyAlgorithm], settings: HacSettings, num_timesteps: int = 0
    ) -> None:
        if env.num_envs != 1:
            raise ValueError(f"HierarchicalActorCritic runs one env, got {env.num_envs}")
        if len(learners) != len(settings.time_scales):
            raise ValueError("one learner per time scale is needed")
        self.env = env
        self.learners = learners
        self.settings = settings
        self.num_timesteps = num_timesteps
        self._vec_normalize = unwrap_vec_normalize(env)
        # Through the wrapper chain: a reward-convention wrapper (MinusOneZeroReward) must be what judges goals.
        self._compute_reward: Callable[..., Any] = env.get_attr("compute_reward", indices=[0])[0]
        self._rng = np.random.default_rng(settings.seed)
        self.train_stats = [LayerStats() for _ in learners]
        self.test_stats = [LayerStats() for _ in learners]
        self._logger = Logger(folder=None, output_formats=[])
        for index, learner in enumerate(learners):
            learner.action_space.seed(settings.seed + index)
            learner._vec_normalize_env = self._vec_normalize
            self._attach_goal_functions(index, learner.replay_buffer)
            if settings.bound_q:
                _bound_q_targets(learner, settings.time_scales[index])
        self.set_logger(self._logger)
        # The running training episode: its generator, the action it asked for, and the episode's return.
        self._episode: Generator[np.ndarray, None, bool] | None = None
        self._rollout: _Rollout | None = None
        self._pending_action: np.ndarray | None = None
        self._episode_return = 0.0
        self._episode_length = 0
        # Greedy control of another env through predict().
        self._test_episode: Generator[np.ndarray, None, bool] | None = None
        self._test_rollout: _Rollout | None = None
        self._test_goal: np.ndarray | None = None
        self._test_steps = 0

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.learners)

    @property
    def replay_buffer(self) -> list[SubgoalTestingBuffer]:
        """Every layer's buffer, lowest layer first."""
        return [learner.replay_buffer for learner in self.learners]  # type: ignore[misc]

    @property
    def logger(self) -> Logger:
        """The shared logger every layer records into."""
        return self._logger

    def set_logger(self, logger: Logger) -> None:
        """Log into `logger`; layer i's SB3 values arrive as `train/layer{i}/<SB3 name>`."""
        self._logger = logger
        for index, learner in enumerate(self.learners):
            learner.set_logger(_LayerLogger(logger, index))

    def get_env(self) -> VecEnv:
        """The training env (SB3 callbacks read it)."""
        return self.env

    # ------------------------------------------------------------------ training

    def learn(
        self,
        total_timesteps: int,
        callback: BaseCallback | list[BaseCallback] | None = None,
        log_interval: int = 4,
        reset_num_timesteps: bool = True,
    ) -> HierarchicalActorCritic:
        """Take `total_timesteps` env steps, storing each layer's transitions and training every layer.

        :param total_timesteps: Env steps (layer-0 actions) to take in this call.
        :param callback: SB3 callback(s); ``locals`` holds ``dones``, ``infos``, ``rewards`` and ``actions``.
        :param log_interval: Dump the logger every this many finished env episodes (and at the end).
        :param reset_num_timesteps: Start counting from 0 and from a fresh env episode; otherwise continue the
            running episode.
        """
        if reset_num_timesteps:
            self.num_timesteps = 0
            self._episode = None
        callbacks = callback if isinstance(callback, BaseCallback) else CallbackList(list(callback or []))
        callbacks.init_callback(self)  # type: ignore[arg-type]
        callbacks.on_training_start({"total_timesteps": total_timesteps}, {})
        callbacks.on_rollout_start()
        end = self.num_timesteps + total_timesteps
        finished_episodes = 0
        while self.num_timesteps < end:
            if self._episode is None:
                self._start_episode(self._current_raw(self.env.reset()), new_env_episode=True)
            dones, infos, rewards, actions = self._env_step()
            self.num_timesteps += 1
            callbacks.update_locals({"dones": dones, "infos": infos, "rewards": rewards, "actions": actions})
            if not callbacks.on_step():
                break
            self._train_layers()
            if dones[0]:
                finished_episodes += 1
                if finished_episodes % log_interval == 0:
                    self.logger.dump(step=self.num_timesteps)
        self.logger.dump(step=self.num_timesteps)
        callbacks.on_rollout_end()
        callbacks.on_training_end()
        return self

    def _start_episode(self, raw_obs: Observation, new_env_episode: bool) -> None:
        """Begin a top-layer run from `raw_obs` (a new env episode, or the same one after the top layer's H)."""
        if new_env_episode:
            self._episode_return, self._episode_length = 0.0, 0
        self._rollout = self._new_rollout(raw_obs, training=True, stats=self.train_stats)
        self._episode = self._run_layer(self.n_layers - 1, self._rollout, testing=False)
        self._pending_action = next(self._episode)

    def _env_step(self) -> tuple[np.ndarray, list[dict[str, Any]], np.ndarray, np.ndarray]:
        """Execute the pending action, let the layers store what happened and pick the next action."""
        assert self._episode is not None and self._rollout is not None and self._pending_action is not None
        actions = self._pending_action[None]
        obs, rewards, dones, infos = self.env.step(actions)
        self._episode_return += float(rewards[0])
        self._episode_length += 1
        if dones[0]:
            next_raw = self._raw_single(infos[0]["terminal_observation"])
        else:
            next_raw = self._current_raw(obs)
            if self.settings.end_on_success and info_success(infos[0]):
                # Monitor only reports episodes the env ends itself: report this one the same way.
                episode = {"r": self._episode_return, "l": self._episode_length}
                infos = [{**infos[0], "episode": episode, "terminal_observation": {k: v[0] for k, v in obs.items()}}]
                dones = np.ones(1, dtype=bool)
                obs = self.env.reset()
        self._rollout.obs = next_raw
        self._rollout.path.append(next_raw)
        self._rollout.env_done = bool(dones[0])
        try:
            self._pending_action = self._episode.send(None)
        except StopIteration:
            self._start_episode(self._current_raw(obs), new_env_episode=bool(dones[0]))
        return dones, infos, rewards, actions

    def _train_layers(self) -> None:
        for learner in self.learners:
            buffer: SubgoalTestingBuffer = learner.replay_buffer  # type: ignore[assignment]
            if (
                self.num_timesteps >= learner.learning_starts
                and self.num_timesteps % learner.train_freq.frequency == 0
                and buffer.n_complete_transitions() > 0
                and learner.gradient_steps > 0
            ):
                learner.train(gradient_steps=learner.gradient_steps, batch_size=learner.batch_size)

    # ------------------------------------------------------------------ the nested layers

    def _new_rollout(self, raw_obs: Observation, training: bool, stats: list[LayerStats]) -> _Rollout:
        goals = [raw_obs["desired_goal"].copy() for _ in range(self.n_layers)]
        return _Rollout(obs=raw_obs, goals=goals, training=training, stats=stats, path=[raw_obs])

    def _run_layer(self, index: int, rollout: _Rollout, testing: bool) -> Generator[np.ndarray, None, bool]:
        """One sub-episode of layer `index` towards `rollout.goals[index]`, as a generator of env actions.

        After each yielded env action the caller updates `rollout.obs` and `rollout.env_done`, then resumes.
        Returns whether the layer maxed out: used all H attempts without reaching its goal.
        """
        time_scale = self.settings.time_scales[index]
        goal = rollout.goals[index]
        stats = rollout.stats[index]
        start_steps = rollout.steps
        distance = float(np.linalg.norm(rollout.obs["achieved_goal"] - goal))
        reached = False
        for attempt in range(time_scale):
            layer_obs = _with_goal(rollout.obs, goal)
            action = self._choose_action(index, layer_obs, explore=rollout.training and not testing)
            if index == 0:
                yield action
                rollout.steps += 1
            else:
                test_below = testing or (rollout.training and self._rng.random() < self.settings.subgoal_test_perc)
                start = rollout.obs["achieved_goal"].copy()
                subgoal = self._subgoal(action, start)
                rollout.goals[index - 1] = subgoal
                below_maxed_out = yield from self._run_layer(index - 1, rollout, test_below)
            next_layer_obs = _with_goal(rollout.obs, goal)
            achieved = rollout.obs["achieved_goal"]
            reached = self._reached(index, achieved, goal)
            higher_reached = any(
                self._reached(layer, achieved, rollout.goals[layer]) for layer in range(index + 1, self.n_layers)
            )
            ends = reached or higher_reached or rollout.env_done or attempt == time_scale - 1
            if rollout.training:
                stored_action = action
                if index > 0:
                    hit = self._reached(index - 1, achieved, subgoal)
                    stored_action = action if hit else self._action_for(achieved, start)
                    penalised = test_below and not hit and below_maxed_out
                    if test_below:
                        rollout.stats[index - 1].tested += 1
                        rollout.stats[index - 1].penalised += int(penalised)
                    if penalised:
                        self._buffer(index).add_penalty(
                            _batch(layer_obs), _batch(next_layer_obs), self._scaled(index, action), -float(time_scale)
                        )
                self._store(index, layer_obs, stored_action, next_layer_obs, reached, ends)
            if ends:
                break
        if rollout.training and index > 0 and self.settings.dense_hindsight:
            self._store_shifted_chains(index, rollout.path[start_steps:], goal)
        stats.sub_episodes += 1
        stats.reached += int(reached)
        stats.env_steps += rollout.steps - start_steps
        stats.goal_distance += distance
        return attempt == time_scale - 1 and not reached

    def _store(
        self, index: int, obs: Observation, action: np.ndarray, next_obs: Observation, reached: bool, ends: bool
    ) -> None:
        achieved, goal = next_obs["achieved_goal"][None], next_obs["desired_goal"][None]
        reward = np.asarray(self._reward(index, achieved, goal, [{}])).reshape(1)
        self._buffer(index).add(
            _batch(obs),
            _batch(next_obs),
            self._scaled(index, action),
            reward.astype(np.float32),
            np.asarray([ends]),
            [{"TimeLimit.truncated": ends and not reached}],
        )

    def _store_shifted_chains(self, index: int, path: list[Observation], goal: np.ndarray) -> None:
        """Store layer `index`'s run again as if its actions had started `offset` env steps later, for every
        offset below its stride (the env steps one of its actions may take): each chain hops `stride` steps at
        a time, from `path[offset]` to the run's last observation, with hindsight actions only.

        This is HAC's own assumption behind hindsight actions (the layer below reaches what was reached within
        its H attempts), applied at every env step: a layer above 0 learns from about one transition per env
        step instead of one per action it took. Each chain is one sub-episode of the layer's buffer, so HER
        relabels its goals; no chain gets subgoal-testing penalties.
        """
        stride = int(np.prod(self.settings.time_scales[:index]))
        last = len(path) - 1
        for offset in range(1, min(stride, last)):
            step = offset
            while step < last:
                hop = min(step + stride, last)
                reached = self._reached(index, path[hop]["achieved_goal"], goal)
                action = self._action_for(path[hop]["achieved_goal"], path[step]["achieved_goal"])
                ends = reached or hop == last
                self._store(index, _with_goal(path[step], goal), action, _with_goal(path[hop], goal), reached, ends)
                if ends:
                    break
                step = hop

    def _choose_action(self, index: int, layer_obs: Observation, explore: bool) -> np.ndarray:
        """Layer `index`'s action for a raw observation: warm-up uniform, policy sample plus noise, or greedy;
        while exploring, uniform with the learner's `random_action_prob` (FusedSAC's key) as well."""
        learner = self.learners[index]
        random_share = getattr(learner, "random_action_prob", 0.0)
        warm_up = self.num_timesteps < learner.learning_starts
        # drawn only when a share is set, so runs without one keep the random numbers they always had
        if explore and (warm_up or (random_share > 0 and np.random.random_sample() < random_share)):
            return np.asarray(learner.action_space.sample())
        action, _ = learner.predict(self._normalize(_batch(layer_obs)), deterministic=not explore)
        if explore and learner.action_noise is not None:
            noisy = np.clip(learner.policy.scale_action(action) + learner.action_noise(), -1.0, 1.0)
            action = learner.policy.unscale_action(noisy)
        return np.asarray(action[0])

    def _subgoal(self, action: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The subgoal a layer's action sets for the layer below, from the achieved goal `start`."""
        if not self.settings.relative_subgoals:
            return action
        return np.clip(start + action, self.settings.subgoal_low, self.settings.subgoal_high).astype(action.dtype)

    def _action_for(self, subgoal: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The action that sets `subgoal` from `start`, the inverse of :meth:`_subgoal` for hindsight actions
        (an offset beyond the action space is clipped when it is stored)."""
        return subgoal - start if self.settings.relative_subgoals else subgoal

    def _scaled(self, index: int, action: np.ndarray) -> np.ndarray:
        """An action as SB3 buffers store it: scaled to [-1, 1] (a hindsight action may need clipping)."""
        scaled = self.learners[index].policy.scale_action(np.asarray(action, dtype=np.float32)[None])
        return np.clip(scaled, -1.0, 1.0)

    def _buffer(self, index: int) -> SubgoalTestingBuffer:
        return self.learners[index].replay_buffer  # type: ignore[return-value]

    def _judged_by_distance(self, index: int) -> bool:
        return self.settings.subgoal_threshold is not None and index < self.n_layers - 1

    def _success(self, index: int, achieved: np.ndarray, goal: np.ndarray, info: Any) -> np.ndarray:
        """Layer `index`'s goal test on a batch: the env's (its reward is 0 exactly when the goal is reached),
        or the distance within `subgoal_threshold` for the layers below the top that judge by it."""
        if self._judged_by_distance(index):
            difference = np.asarray(achieved, dtype=np.float64) - np.asarray(goal, dtype=np.float64)
            return np.linalg.norm(difference, axis=-1) <= self.settings.subgoal_threshold
        return np.asarray(self._compute_reward(achieved, goal, info)) == 0

    def _reward(self, index: int, achieved: np.ndarray, goal: np.ndarray, info: Any) -> np.ndarray:
        """Layer `index`'s reward on a batch: the env's, or -1/0 by :meth:`_success` where it judges by distance."""
        if self._judged_by_distance(index):
            return self._success(index, achieved, goal, info).astype(np.float32) - 1.0
        return np.asarray(self._compute_reward(achieved, goal, info))

    def _reached(self, index: int, achieved: np.ndarray, goal: np.ndarray) -> bool:
        """Whether layer `index` counts its goal reached at one achieved goal."""
        return bool(self._success(index, achieved, goal, {}))

    def _attach_goal_functions(self, index: int, buffer: Any) -> None:
        if not isinstance(buffer, SubgoalTestingBuffer):
            raise TypeError("every HAC layer needs a SubgoalTestingBuffer")
        buffer.attach_goal_functions(functools.partial(self._reward, index), functools.partial(self._success, index))

    # ------------------------------------------------------------------ observations

    def _raw(self, obs: Observation) -> Observation:
        """The first env's raw observation from a batched, possibly normalised one."""
        if self._vec_normalize is not None:
            obs = self._vec_normalize.unnormalize_obs(obs)  # type: ignore[assignment]
        return {key: np.asarray(value[0]) for key, value in obs.items()}

    def _raw_single(self, obs: Observation) -> Observation:
        return self._raw({key: np.asarray(value)[None] for key, value in obs.items()})

    def _current_raw(self, obs: Observation) -> Observation:
        """The raw current observation of the training env (exact, without an unnormalise round trip)."""
        if self._vec_normalize is not None:
            obs = self._vec_normalize.get_original_obs()  # type: ignore[assignment]
            return {key: np.asarray(value[0]) for key, value in obs.items()}
        return self._raw(obs)

    def _normalize(self, obs: Observation) -> Observation:
        if self._vec_normalize is None:
            return obs
        return self._vec_normalize.normalize_obs(obs)  # type: ignore[return-value]

    # ------------------------------------------------------------------ acting

    def predict(
        self,
        observation: Observation,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, None]:
        """The env action for one env's observation, as the env returned it (normalised if it normalises).

        As in SB3, a batched observation (of the one env) gets a batched action, an unbatched one an unbatched
        action.

        The hierarchy's subgoals persist between calls, like a recurrent policy's state. A new episode starts
        when `episode_start[0]` is true or, without `episode_start` (SB3's evaluation does not pass it), when
        the desired goal changes or the env's step limit (the product of the time scales) was used up.
        Every layer acts greedily when `deterministic`; nothing is stored or trained. `state` is unused.
        For `test_layer{i}/success_rate`, sub-episodes still running when an episode ends are judged on the
        episode's final observation if :meth:`observe_episode_end` is given it (our test rollouts do), else on
        the last observation predict() saw, one step before the end.
        """
        goal_dims = len(self.env.observation_space["desired_goal"].shape)  # type: ignore[index]
        batched = np.ndim(observation["desired_goal"]) > goal_dims
        raw = self._raw(observation) if batched else self._raw_single(observation)
        if episode_start is not None:
            new_episode = bool(episode_start[0])
        else:
            new_episode = (
                self._test_goal is None
                or not np.array_equal(raw["desired_goal"], self._test_goal)
                or self._test_steps >= int(np.prod(self.settings.time_scales))
            )
        if new_episode or self._test_episode is None or self._test_rollout is None:
            self._end_test_run()
            self._test_goal = raw["desired_goal"].copy()
            self._test_steps = 0
            action = self._start_test_run(raw, deterministic)
        else:
            self._test_rollout.obs = raw
            try:
                action = self._test_episode.send(None)
            except StopIteration:
                action = self._start_test_run(raw, deterministic)
        self._test_steps += 1
        return (action[None] if batched else action), None

    def observe_episode_end(self, final_observation: Observation) -> None:
        """Close predict()'s episode on its final observation (one env's, unbatched, as the env returned it).

        predict() never sees the observation an episode ends on; an episode that ends on success (the
        mazes terminate there) would otherwise count the top layer's goal as missed.
        """
        if self._test_rollout is not None:
            self._test_rollout.obs = self._raw_single(final_observation)
        self._end_test_run()

    def _end_test_run(self) -> None:
        """Close the running sub-episodes; predict() never sees the final observation, so they are judged on
        the last one it saw."""
        if self._test_episode is not None and self._test_rollout is not None:
            self._test_rollout.env_done = True
            with contextlib.suppress(StopIteration):
                self._test_episode.send(None)
        self._test_episode = None

    def _start_test_run(self, raw_obs: Observation, deterministic: bool) -> np.ndarray:
        self._test_rollout = self._new_rollout(raw_obs, training=False, stats=self.test_stats)
        self._test_episode = self._run_layer(self.n_layers - 1, self._test_rollout, testing=deterministic)
        return next(self._test_episode)

    def current_subgoals(self) -> list[np.ndarray]:
        """The goal of every layer in the episode predict() is controlling, lowest first (for rendering)."""
        return [] if self._test_rollout is None else [goal.copy() for goal in self._test_rollout.goals]

    # ------------------------------------------------------------------ metrics

    def epoch_metrics(self) -> dict[str, float]:
        """Per-layer metrics since the last call, then the counts restart.

        `train_layer{i}/subgoal_success_rate`: fraction of layer i's training sub-episodes that reached their
        goal; `train_layer{i}/subgoal_test_penalty_rate`: fraction of layer i's tested sub-episodes that missed
        (each a -H penalty for layer i+1); `train_layer{i}/q_mean`: mean Q of a sampled batch;
        `test_layer{i}/success_rate`: as the first, over predict()'s sub-episodes. Both prefixes also carry
        `goal_distance`, the mean Euclidean distance in the goal space from the achieved goal at a sub-episode's
        start to its goal, and `sub_episode_steps`, the mean env steps per sub-episode: subgoals that lie
        within the success test's reach of the agent (a step or two each) show that a layer lost its temporal
        abstraction. Rates without any sub-episode are left out.
        """
        metrics: dict[str, float] = {}
        for index, (train, test) in enumerate(zip(self.train_stats, self.test_stats)):
            if train.sub_episodes:
                metrics[f"train_layer{index}/subgoal_success_rate"] = train.reached / train.sub_episodes
            if train.tested:
                metrics[f"train_layer{index}/subgoal_test_penalty_rate"] = train.penalised / train.tested
            if test.sub_episodes:
                metrics[f"test_layer{index}/success_rate"] = test.reached / test.sub_episodes
            for prefix, stats in (("train", train), ("test", test)):
                if stats.sub_episodes:
                    metrics[f"{prefix}_layer{index}/goal_distance"] = stats.goal_distance / stats.sub_episodes
                    metrics[f"{prefix}_layer{index}/sub_episode_steps"] = stats.env_steps / stats.sub_episodes
            q_mean = self._q_mean(index)
            if q_mean is not None:
                metrics[f"train_layer{index}/q_mean"] = q_mean
        self.train_stats = [LayerStats() for _ in self.learners]
        self.test_stats = [LayerStats() for _ in self.learners]
        if self._rollout is not None:
            self._rollout.stats = self.train_stats
        if self._test_rollout is not None:
            self._test_rollout.stats = self.test_stats
        return metrics

    def _q_mean(self, index: int, batch_size: int = 256) -> float | None:
        learner = self.learners[index]
        buffer = self._buffer(index)
        if buffer.n_complete_transitions() == 0:
            return None
        # Sampling draws from numpy's global generator, which training uses too: measuring must not move it.
        training_rng = np.random.get_state()
        try:
            batch = buffer.sample(batch_size, env=self._vec_normalize)
        finally:
            np.random.set_state(training_rng)
        with th.no_grad():
            q_values = learner.critic(batch.observations, batch.actions)  # type: ignore[attr-defined]
        # The first critic's values: one Q per critic (SAC, TD3, DDPG), or quantiles per critic (TQC).
        first = q_values[0] if isinstance(q_values, tuple) else q_values[:, 0]
        return float(first.mean())

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Save every layer's learner (without buffers) and the hierarchy's settings to one zip file."""
        with zipfile.ZipFile(path, "w") as archive:
            meta = {
                "settings": asdict(self.settings),
                "learners": [f"{type(learner).__module__}:{type(learner).__qualname__}" for learner in self.learners],
                "num_timesteps": self.num_timesteps,
            }
            archive.writestr("hac.json", json.dumps(meta, indent=1))
            for index, learner in enumerate(self.learners):
                data = io.BytesIO()
                learner.save(data)
                archive.writestr(f"layer{index}.zip", data.getvalue())

    @classmethod
    def load(cls, path: str | Path, env: VecEnv, device: str = "auto") -> HierarchicalActorCritic:
        """Load a hierarchy saved by :meth:`save` and bind it to `env` (buffers start empty)."""
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("hac.json"))
            learners = [
                _learner_class(name).load(io.BytesIO(archive.read(f"layer{index}.zip")), device=device)
                for index, name in enumerate(meta["learners"])
            ]
        return cls(env, learners, HacSettings(**meta["settings"]), num_timesteps=meta["num_timesteps"])

    def save_replay_buffer(self, path: str | Path) -> None:
        """Pickle every layer's buffer (with its penalties) into one file."""
        save_to_pkl(path, self.replay_buffer)

    def load_replay_buffer(self, path: str | Path) -> None:
        """Restore buffers saved by :meth:`save_replay_buffer`; unfinished sub-episodes are dropped."""
        buffers = load_from_pkl(path)
        for index, (learner, buffer) in enumerate(zip(self.learners, buffers, strict=True)):
            self._attach_goal_functions(index, buffer)
            buffer.truncate_last_trajectory()
            learner.replay_buffer = buffer


def build_layer_learner(
    learner_class: type[OffPolicyAlgorithm],
    observation_space: spaces.Dict,
    action_space: spaces.Box,
    kwargs: dict[str, Any],
    seed: int,
    device: str,
) -> OffPolicyAlgorithm:
    """An SB3 learner for one layer, built from spaces alone (HAC, not the learner, talks to the env).

    `kwargs` are the learner's constructor arguments; its buffer is always a :class:`SubgoalTestingBuffer`
    configured by `kwargs["replay_buffer_kwargs"]` (`n_sampled_goal`, `goal_selection_strategy`).
    """
    takes_entropy = any(
        "target_entropy" in inspect.signature(cls.__init__).parameters for cls in learner_class.__mro__[:-1]
    )
    if takes_entropy and kwargs.get("target_entropy", "auto") == "auto":
        # SAC and TQC read their default, -dim(A), from an env; these learners have none.
        kwargs = {**kwargs, "target_entropy": -float(np.prod(action_space.shape))}
    learner: BaseAlgorithm = learner_class(
        env=None, seed=seed, device=device, replay_buffer_class=SubgoalTestingBuffer, _init_setup_model=False, **kwargs
    )
    learner.observation_space = observation_space
    learner.action_space = action_space
    learner.n_envs = 1
    learner._setup_model()
    return learner  # type: ignore[return-value]


def _learner_class(name: str) -> type[OffPolicyAlgorithm]:
    """A layer's learner class from its saved `module:Class` (a bare class name: FusedSAC or one of SB3's)."""
    module, _, class_name = name.rpartition(":")
    if not module:
        module = _BARE_CLASS_MODULES.get(class_name, "stable_baselines3")
    return getattr(importlib.import_module(module), class_name)


def _bound_q_targets(learner: OffPolicyAlgorithm, bound: float) -> None:
    """Clamp the target critic's Q-values to [-bound, 0]; the online critic keeps its gradients everywhere.

    The clamp is torch's nn.Hardtanh, which FusedSAC's fast path applies in its own target computation.
    """
    for q_network in learner.critic_target.q_networks:  # type: ignore[attr-defined]
        if not isinstance(q_network[-1], th.nn.Hardtanh):
            q_network.append(th.nn.Hardtanh(-float(bound), 0.0))


def _with_goal(obs: Observation, goal: np.ndarray) -> Observation:
    return {"observation": obs["observation"], "achieved_goal": obs["achieved_goal"], "desired_goal": goal}


def _batch(obs: Observation) -> Observation:
    return {key: np.asarray(value)[None] for key, value in obs.items()}
