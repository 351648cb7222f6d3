"""Hierarchical Actor-Critic: the exact transitions of a scripted episode, persistence, config errors, a smoke run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from experiment.train import train
from ideas_baselines.hac import HierarchicalActorCritic
from ideas_envs.goal_reward_convention import MinusOneZeroReward, pays_one_at_goal
from interface.algorithms import get_algorithm
from interface.envs import goal_functions, make_vec_env
from interface.hac import build_hac
from tests.conftest import TINY
from util.callbacks import EpisodeStatsCallback
from util.errors import ConfigError

CHAIN_ID = "HacTestChain-v0"


class ChainEnv(gym.Env):
    """A 1-D chain of cells 0..9 for hand-checkable HAC episodes.

    Action: Box(-1, 1, (1,)), moves round(a) cells (clipped to the chain). Observation: Dict with
    `observation`, `achieved_goal` (both the current cell) and `desired_goal` (cell `goal`). Reward: 0 on the goal cell, else -1 (`compute_reward` is vectorised). Start: cell 0.
    Never terminates; the registration truncates after 6 steps.
    """

    size = 10

    def __init__(self, goal: float = 3.0) -> None:
        cell = gym.spaces.Box(0.0, self.size - 1.0, (1,), dtype=np.float32)
        self.observation_space = gym.spaces.Dict({"observation": cell, "achieved_goal": cell, "desired_goal": cell})
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
        self.position, self.goal = 0.0, goal

    def _obs(self) -> dict[str, np.ndarray]:
        here = np.array([self.position], dtype=np.float32)
        return {
            "observation": here,
            "achieved_goal": here.copy(),
            "desired_goal": np.array([self.goal], dtype=np.float32),
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.position = 0.0
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        self.position = float(np.clip(self.position + np.round(action[0]), 0, self.size - 1))
        obs = self._obs()
        reward = float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], {}))
        return obs, reward, False, False, {"is_success": float(reward == 0.0)}

    def compute_reward(self, achieved: np.ndarray, desired: np.ndarray, info: Any) -> np.ndarray:
        return -(np.abs(np.asarray(achieved) - np.asarray(desired))[..., 0] > 0.5).astype(np.float32)


if CHAIN_ID not in gym.registry:
    gym.register(CHAIN_ID, entry_point=ChainEnv, max_episode_steps=6)


def _hac_on_chain(make_cfg, *overrides: str, goal: float = 3.0) -> HierarchicalActorCritic:
    cfg = make_cfg("algorithm=hac", "algorithm.time_scales=[3,-1]", *overrides)
    env = make_vec_env(CHAIN_ID, {"goal": goal}, seed=0)
    return build_hac(cfg.algorithm, env, seed=0, device="cpu")


def _script(model: HierarchicalActorCritic, actions: dict[int, list[float]]) -> None:
    """Make layer i take `actions[i]` in order, whatever its policy says."""
    queues = {layer: list(values) for layer, values in actions.items()}

    def choose(index: int, layer_obs: dict, explore: bool) -> np.ndarray:
        return np.array([queues[index].pop(0)], dtype=np.float32)

    model._choose_action = choose  # type: ignore[method-assign]


def _stored(model: HierarchicalActorCritic, layer: int) -> list[tuple[float, float, float, float, float, bool, bool]]:
    """Layer `layer`'s main-buffer transitions as (cell, action, next cell, goal, reward, done, truncated)."""
    buffer = model.replay_buffer[layer]
    actions = model.learners[layer].policy.unscale_action(buffer.actions[: buffer.pos, 0])
    return [
        (
            float(buffer.observations["achieved_goal"][i, 0, 0]),
            round(float(actions[i, 0]), 4),
            float(buffer.next_observations["achieved_goal"][i, 0, 0]),
            float(buffer.observations["desired_goal"][i, 0, 0]),
            float(buffer.rewards[i, 0]),
            bool(buffer.dones[i, 0]),
            bool(buffer.timeouts[i, 0]),
        )
        for i in range(buffer.pos)
    ]


def test_scripted_two_layer_episode_stores_each_transition_type(make_cfg) -> None:
    # Layer 0 has H=2, layer 1 (top) H=3 and pursues the env goal 3; every subgoal is tested.
    model = _hac_on_chain(make_cfg, "algorithm.subgoal_test_perc=1.0", "algorithm.normalize_obs=false")
    assert model.settings.time_scales == [2, 3]
    _script(model, {1: [1.0, 5.0, 6.0, 9.0], 0: [1.0, 0.0, 1.0, 1.0, 1.0]})
    model.learn(4)
    # Subgoal 1 is hit after one step (early return); subgoal 5 is missed after both attempts (cell 2);
    # subgoal 6 is missed, but layer 0 stops after one step because the env goal 3 is reached.
    assert _stored(model, 1) == [
        (0.0, 1.0, 1.0, 3.0, -1.0, False, False),
        (1.0, 2.0, 2.0, 3.0, -1.0, False, False),  # hindsight action: the cell reached, not 5
        (2.0, 3.0, 3.0, 3.0, 0.0, True, False),  # hindsight action 3, goal reached: terminal
    ]
    assert _stored(model, 0) == [
        (0.0, 1.0, 1.0, 1.0, 0.0, True, False),
        (1.0, 0.0, 1.0, 5.0, -1.0, False, False),
        (1.0, 1.0, 2.0, 5.0, -1.0, True, True),  # out of attempts: sub-episode ends, not terminal
        (2.0, 1.0, 3.0, 6.0, -1.0, True, True),  # a higher goal was reached: ends, not terminal
    ]
    # Only subgoal 5 earns the -H penalty: tested, missed, and layer 0 used all its attempts.
    penalties = model.replay_buffer[1].penalties
    assert penalties.size() == 1
    assert float(penalties.observations["achieved_goal"][0, 0, 0]) == 1.0
    assert float(model.learners[1].policy.unscale_action(penalties.actions[0])[0, 0]) == pytest.approx(5.0)
    assert float(penalties.next_observations["achieved_goal"][0, 0, 0]) == 2.0
    assert float(penalties.rewards[0, 0]) == -3.0 and bool(penalties.dones[0, 0])
    assert model.replay_buffer[0].penalties.size() == 0
    metrics = model.epoch_metrics()
    assert metrics["train_layer0/subgoal_test_penalty_rate"] == pytest.approx(1 / 3)
    assert metrics["train_layer0/subgoal_success_rate"] == pytest.approx(1 / 3)
    assert metrics["train_layer1/subgoal_success_rate"] == 1.0
    # Subgoals 1, 5, 6 were set from cells 0, 1, 2 and took 1, 2, 1 env steps; the top run went 0 -> 3 in 4.
    assert metrics["train_layer0/goal_distance"] == pytest.approx((1 + 4 + 4) / 3)
    assert metrics["train_layer0/sub_episode_steps"] == pytest.approx(4 / 3)
    assert metrics["train_layer1/goal_distance"] == pytest.approx(3.0)
    assert metrics["train_layer1/sub_episode_steps"] == pytest.approx(4.0)


def test_dense_hindsight_adds_chains_that_start_between_the_layers_actions(make_cfg) -> None:
    model = _hac_on_chain(
        make_cfg, "algorithm.dense_hindsight=true", "algorithm.subgoal_test_perc=0.0", "algorithm.normalize_obs=false"
    )
    _script(model, {1: [1.0, 5.0, 6.0, 9.0], 0: [1.0, 0.0, 1.0, 1.0, 1.0]})
    model.learn(4)
    # The top run visits cells 0, 1, 1, 2, 3 (as in the scripted episode above). Its own three transitions come
    # first; then the chain shifted by one env step hops layer 0's H = 2 steps: cell 1 -> 2, then 2 -> 3 (goal).
    assert _stored(model, 1) == [
        (0.0, 1.0, 1.0, 3.0, -1.0, False, False),
        (1.0, 2.0, 2.0, 3.0, -1.0, False, False),
        (2.0, 3.0, 3.0, 3.0, 0.0, True, False),
        (1.0, 2.0, 2.0, 3.0, -1.0, False, False),
        (2.0, 3.0, 3.0, 3.0, 0.0, True, False),
    ]
    # Each chain is a sub-episode of its own for HER; layer 0 stores nothing extra.
    assert model.replay_buffer[1].ep_length[:5, 0].tolist() == [3, 3, 3, 2, 2]
    assert len(_stored(model, 0)) == 4


def test_relative_subgoals_are_offsets_from_the_cell_reached_and_so_are_their_hindsight_actions(make_cfg) -> None:
    model = _hac_on_chain(
        make_cfg, "algorithm.subgoal_radius=2", "algorithm.subgoal_test_perc=1.0", "algorithm.normalize_obs=false"
    )
    top_space = model.learners[1].action_space
    assert top_space.low.tolist() == [-2.0] and top_space.high.tolist() == [2.0]
    # Offsets +1 (from cell 0), +2 (from cell 1), +2 (from cell 2): subgoals 1, 3 and 4.
    _script(model, {1: [1.0, 2.0, 2.0, 0.0], 0: [1.0, 0.0, 1.0, 1.0, 0.0]})
    model.learn(4)
    assert [goal for _, _, _, goal, *_ in _stored(model, 0)] == [1.0, 3.0, 3.0, 4.0]
    assert _stored(model, 1) == [
        (0.0, 1.0, 1.0, 3.0, -1.0, False, False),  # subgoal hit: the offset taken
        (1.0, 1.0, 2.0, 3.0, -1.0, False, False),  # subgoal 3 missed at cell 2: hindsight offset 2 - 1
        (2.0, 1.0, 3.0, 3.0, 0.0, True, False),  # the env goal reached on the way to 4: offset 3 - 2
    ]
    penalties = model.replay_buffer[1].penalties
    assert penalties.size() == 1
    assert float(model.learners[1].policy.unscale_action(penalties.actions[0])[0, 0]) == pytest.approx(2.0)


def test_relative_subgoals_stay_inside_the_subgoal_bounds(make_cfg) -> None:
    model = _hac_on_chain(make_cfg, "algorithm.subgoal_radius=3", "algorithm.normalize_obs=false")
    _script(model, {1: [-3.0, 3.0], 0: [0.0, 1.0, 1.0]})
    model.learn(2)
    # From cell 0 the offset -3 is clipped to cell 0, which layer 0 reaches by standing still; stored as taken.
    assert _stored(model, 0)[0][3] == 0.0
    assert _stored(model, 1)[0][:3] == (0.0, -3.0, 0.0)


def test_hindsight_goals_come_from_the_same_sub_episode_with_recomputed_rewards(make_cfg) -> None:
    model = _hac_on_chain(make_cfg, "algorithm.subgoal_test_perc=0.0", "algorithm.normalize_obs=false")
    _script(model, {1: [1.0, 5.0, 6.0, 9.0], 0: [1.0, 0.0, 1.0, 1.0, 1.0]})
    model.learn(4)
    assert model.replay_buffer[1].penalties.size() == 0  # nothing is tested with lambda = 0
    np.random.seed(0)
    batch = model.replay_buffer[1].sample_transitions(200)
    relabelled = batch.relabelled
    assert 0 < relabelled.sum() < 200
    goals = batch.observations["desired_goal"][relabelled, 0]
    achieved = batch.next_observations["achieved_goal"][relabelled, 0]
    # "future": a goal achieved at or after the transition, inside the same sub-episode (cells 1, 2, 3).
    assert np.all(goals >= achieved) and set(np.unique(goals)) <= {1.0, 2.0, 3.0}
    assert np.array_equal(batch.rewards[relabelled], np.where(goals == achieved, 0.0, -1.0))
    assert np.array_equal(batch.terminals[relabelled], (goals == achieved).astype(np.float32))


def test_no_penalty_when_the_env_episode_ends_the_lower_layer(make_cfg) -> None:
    # The env goal 9 is out of reach in 6 steps; every subgoal is tested.
    model = _hac_on_chain(make_cfg, "algorithm.subgoal_test_perc=1.0", "algorithm.normalize_obs=false", goal=9.0)
    _script(model, {1: [1.0, 9.0, 9.0, 9.0, 9.0], 0: [1.0] * 7})
    model.learn(6)
    # Subgoal 1 is hit; both subgoals 9 of the first top-layer run are missed after 2 attempts each (penalties);
    # the top layer's next run starts in the same env episode and its subgoal 9 is cut by the time limit at
    # cell 6 after one attempt: missed and tested, yet no penalty.
    assert _stored(model, 1) == [
        (0.0, 1.0, 1.0, 9.0, -1.0, False, False),
        (1.0, 3.0, 3.0, 9.0, -1.0, False, False),
        (3.0, 5.0, 5.0, 9.0, -1.0, True, True),
        (5.0, 6.0, 6.0, 9.0, -1.0, True, True),
    ]
    assert model.replay_buffer[1].penalties.size() == 2


def test_end_on_success_reports_and_resets_the_episode(make_cfg) -> None:
    model = _hac_on_chain(make_cfg, "algorithm.end_on_success=true", "algorithm.normalize_obs=false", goal=1.0)
    _script(model, {1: [1.0, 1.0], 0: [1.0, 1.0]})
    stats = EpisodeStatsCallback()
    model.learn(1, callback=[stats])
    assert stats.pop() == {"train/mean_reward": 0.0, "train/ep_length": 1.0, "train/success_rate": 1.0}
    assert model._rollout is not None and float(model._rollout.obs["achieved_goal"][0]) == 0.0  # back at the start


def test_test_sub_episodes_are_judged_on_the_final_observation_of_the_episode(make_cfg) -> None:
    def chain_obs(cell: float, batched: bool) -> dict[str, np.ndarray]:
        shape = (1, 1) if batched else (1,)
        cells = {"observation": cell, "achieved_goal": cell, "desired_goal": 1.0}
        return {key: np.full(shape, value, dtype=np.float32) for key, value in cells.items()}

    def first_step_then_end(model: HierarchicalActorCritic, tell_end: bool) -> dict[str, float]:
        _script(model, {1: [1.0, 1.0], 0: [1.0, 1.0]})  # subgoal cell 1 = the env goal; layer 0 steps onto it
        model.predict(chain_obs(0.0, batched=True), episode_start=np.array([True]))
        if tell_end:  # the episode ended on success: its final cell 1 is never an input of predict()
            model.observe_episode_end(chain_obs(1.0, batched=False))
        model.predict(chain_obs(0.0, batched=True), episode_start=np.array([True]))
        return model.epoch_metrics()

    model = _hac_on_chain(make_cfg, "algorithm.normalize_obs=false", goal=1.0)
    metrics = first_step_then_end(model, tell_end=True)
    assert metrics["test_layer1/success_rate"] == 1.0
    assert metrics["test_layer0/goal_distance"] == 1.0 and metrics["test_layer0/sub_episode_steps"] == 1.0
    assert first_step_then_end(model, tell_end=False)["test_layer1/success_rate"] == 0.0  # judged on cell 0


@pytest.mark.parametrize("layers", ["[sac,sac]", "[tqc,tqc]", "[td3,ddpg]"])
def test_save_load_round_trip_gives_identical_actions(layers: str, make_cfg, tmp_path: Path) -> None:
    model = _hac_on_chain(
        make_cfg,
        f"algorithm.layer_classes={layers}",
        "algorithm.learner.learning_starts=10",
        "algorithm.learner.batch_size=16",
        "algorithm.learner.buffer_size=1000",
    )
    model.learn(60)
    path = tmp_path / "hac.zip"
    model.save(path)
    model.save_replay_buffer(tmp_path / "buffers.pkl")
    loaded = HierarchicalActorCritic.load(path, make_vec_env(CHAIN_ID, {}, seed=0), device="cpu")
    loaded.load_replay_buffer(tmp_path / "buffers.pkl")
    assert loaded.settings == model.settings and loaded.num_timesteps == model.num_timesteps
    assert [b.n_complete_transitions() for b in loaded.replay_buffer] == [
        b.n_complete_transitions() for b in model.replay_buffer
    ]
    rng = np.random.default_rng(0)
    for step in range(12):
        cell = np.array([[float(rng.integers(0, 10))]], dtype=np.float32)
        obs = {"observation": cell, "achieved_goal": cell.copy(), "desired_goal": np.array([[7.0]], dtype=np.float32)}
        start = np.array([step % 6 == 0])
        first, _ = model.predict(obs, episode_start=start, deterministic=True)
        second, _ = loaded.predict(obs, episode_start=start, deterministic=True)
        np.testing.assert_array_equal(first, second)
    loaded.learn(10, reset_num_timesteps=False)  # the restored buffers train


def test_tqc_layers_bound_their_target_quantiles_and_report_q_mean(make_cfg) -> None:
    model = _hac_on_chain(
        make_cfg,
        "algorithm.layer_classes=[tqc,tqc]",
        "algorithm.learner.learning_starts=10",
        "algorithm.learner.batch_size=16",
        "algorithm.learner.buffer_size=1000",
    )
    model.learn(60)
    for index, learner in enumerate(model.learners):
        batch = model.replay_buffer[index].sample(16)
        with th.no_grad():
            quantiles = learner.critic_target(batch.observations, batch.actions)
        assert quantiles.shape[1:] == (2, 25)
        assert float(quantiles.max()) <= 0.0 and float(quantiles.min()) >= -model.settings.time_scales[index]
    metrics = model.epoch_metrics()
    assert {"train_layer0/q_mean", "train_layer1/q_mean"} <= set(metrics)


def test_measuring_q_mean_does_not_draw_from_the_training_random_numbers(make_cfg) -> None:
    model = _hac_on_chain(make_cfg, "algorithm.learner.learning_starts=10", "algorithm.learner.batch_size=16")
    model.learn(30)
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    assert "train_layer0/q_mean" in model.epoch_metrics()
    assert np.random.random() == expected


def test_predict_answers_an_unbatched_observation_with_an_unbatched_action(make_cfg) -> None:
    model = _hac_on_chain(make_cfg)
    cell = np.array([2.0], dtype=np.float32)
    obs = {"observation": cell, "achieved_goal": cell.copy(), "desired_goal": np.array([7.0], dtype=np.float32)}
    single, _ = model.predict(obs, episode_start=np.ones(1, dtype=bool), deterministic=True)
    batched, _ = model.predict(
        {key: value[None] for key, value in obs.items()}, episode_start=np.ones(1, dtype=bool), deterministic=True
    )
    assert single.shape == model.env.action_space.shape and batched.shape == (1, *model.env.action_space.shape)
    np.testing.assert_array_equal(single, batched[0])


def test_one_layer_is_flat_her(make_cfg) -> None:
    model = _hac_on_chain(make_cfg, "algorithm.layer_classes=[td3]", "algorithm.time_scales=[-1]")
    assert model.n_layers == 1 and model.settings.time_scales == [6]
    model.learn(12)
    assert model.replay_buffer[0].n_complete_transitions() == 12
    assert model.replay_buffer[0].penalties.size() == 0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["algorithm.layer_classes=[sac,dqn]"], "algorithm.layer_classes"),
        (["algorithm.time_scales=[5,2,-1]"], "algorithm.time_scales"),
        (["algorithm.time_scales=[4,-1]"], "algorithm.time_scales"),
        (
            ["algorithm.time_scales=[3,-1]", "algorithm.goal_selection_strategy=random"],
            "algorithm.goal_selection_strategy",
        ),
        (["algorithm.time_scales=[3,-1]", "algorithm.subgoal_test_perc=1.5"], "algorithm.subgoal_test_perc"),
        (["algorithm.time_scales=[3,-1]", "algorithm.subgoal_radius=-1"], "algorithm.subgoal_radius"),
        (["algorithm.time_scales=[3,-1]", "algorithm.subgoal_radius=[1,2]"], "algorithm.subgoal_radius"),
        (["algorithm.time_scales=[3,-1]", "algorithm.subgoal_threshold=0"], "algorithm.subgoal_threshold"),
        (["algorithm.time_scales=[3,-1]", "algorithm.subgoal_threshold=[0.1]"], "algorithm.subgoal_threshold"),
    ],
)
def test_bad_values_name_their_key(make_cfg, overrides: list[str], key: str) -> None:
    cfg: DictConfig = make_cfg("algorithm=hac", *overrides)
    with pytest.raises(ConfigError, match=key) as error:
        build_hac(cfg.algorithm, make_vec_env(CHAIN_ID, {}, seed=0), seed=0, device="cpu")
    if "layer_classes" in key:
        assert "sac, td3, ddpg" in str(error.value)


def test_hac_needs_a_goal_env(make_cfg) -> None:
    cfg = make_cfg("algorithm=hac")
    with pytest.raises(ConfigError, match="^env: algorithm=hac needs a goal env"):
        get_algorithm("hac").build(cfg.algorithm, make_vec_env("Pendulum-v1", {}, seed=0), 0, "cpu")


def test_hac_refuses_dense_rewards(make_cfg) -> None:
    # Only sparse 0/+1 envs are converted to -1/0; a dense maze (exp(-distance), 1 at the goal) stays refused.
    env = make_vec_env("PointMaze_UMazeDense-v3", {}, seed=0)
    message = "^env: algorithm=hac needs -1/0 rewards .0 at the goal.; PointMaze_UMazeDense-v3 gives 1 at the goal$"
    with pytest.raises(ConfigError, match=message):
        build_hac(make_cfg("algorithm=hac", "env=PointMaze_UMazeDense-v3").algorithm, env, 0, "cpu")


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "AntMaze_UMaze-v5"])
def test_sparse_mazes_pay_minus_one_zero_in_step_and_batched_compute_reward(env_id: str) -> None:
    original = gym.make(env_id, continuing_task=False)
    wrapped = MinusOneZeroReward(gym.make(env_id, continuing_task=False))
    assert pays_one_at_goal(original) and wrapped.ends_on_success
    original.reset(seed=3)
    obs, _ = wrapped.reset(seed=3)
    rng = np.random.default_rng(0)
    goal = obs["desired_goal"]
    # Steps: same trajectory, reward shifted by -1, the env's own success flag kept as is_success.
    for _ in range(20):
        action = rng.uniform(-1, 1, original.action_space.shape)
        _, reward, _, _, info = original.step(action)
        obs, wrapped_reward, _, _, wrapped_info = wrapped.step(action)
        assert wrapped_reward == reward - 1.0 and wrapped_info["is_success"] == info["success"]
    # Batches: half of the achieved goals inside the 0.45 radius, half outside.
    achieved = goal + rng.uniform(-0.6, 0.6, (64, 2))
    desired = np.repeat(goal[None], 64, axis=0)
    env_reward = original.unwrapped.compute_reward(achieved, desired, {})
    assert set(np.unique(env_reward)) == {0.0, 1.0}
    np.testing.assert_array_equal(wrapped.compute_reward(achieved, desired, {}), env_reward - 1.0)
    np.testing.assert_array_equal(wrapped.compute_terminated(achieved, desired, {}), env_reward == 1.0)


def test_env_factory_converts_only_sparse_plus_one_goal_envs_and_her_relabels_with_it() -> None:
    goal = np.zeros((2, 2))
    maze = make_vec_env("PointMaze_Medium-v3", {}, seed=0)
    compute_reward, compute_terminated = goal_functions(maze)
    np.testing.assert_array_equal(compute_reward(goal + [[0.0, 0.0], [1.0, 0.0]], goal, {}), [0.0, -1.0])
    # Continuing mazes (the default) never end on success, so HER's relabelled transitions are not terminal.
    assert not compute_terminated(goal, goal, {}).any()
    maze.reset()
    _, rewards, _, infos = maze.step(np.zeros((1, 2)))
    assert rewards[0] in (-1.0, 0.0) and "is_success" in infos[0]
    for env_id in ("FetchReach-v4", "PointMaze_MediumDense-v3"):
        assert not any(isinstance(w, MinusOneZeroReward) for w in _wrapper_chain(make_vec_env(env_id, {}, seed=0)))


def _wrapper_chain(vec_env) -> list[gym.Env]:
    env, chain = vec_env.envs[0], []
    while isinstance(env, gym.Wrapper):
        chain.append(env)
        env = env.env
    return chain


def _hac_on_umaze(make_cfg, override: str) -> HierarchicalActorCritic:
    """2-layer HAC (H = 30 below, 10 on top) on the sparse U-maze (success within 0.45), acting randomly."""
    env = make_vec_env("PointMaze_UMaze-v3", {"continuing_task": False}, seed=0)
    cfg = make_cfg(
        "algorithm=hac",
        "env=PointMaze_UMaze-v3",
        "algorithm.time_scales=[10,-1]",
        override,
        "algorithm.learner.learning_starts=10000",
    )
    return build_hac(cfg.algorithm, env, seed=0, device="cpu")


def test_hac_on_a_sparse_maze_judges_goals_and_stores_rewards_in_the_minus_one_zero_convention(make_cfg) -> None:
    model = _hac_on_umaze(make_cfg, "algorithm.subgoal_test_perc=1.0")
    assert model.settings.time_scales == [30, 10]
    # Target Q-values are clamped to [-H, 0], the range the converted -1/0 rewards allow over H actions, and the
    # SAC layers' fast path (FusedSAC) applies that clamp instead of falling back to SB3's training code.
    clamps = [learner.critic_target.q_networks[0][-1] for learner in model.learners]
    assert [(clamp.min_val, clamp.max_val) for clamp in clamps] == [(-30.0, 0.0), (-10.0, 0.0)]
    assert [learner._lean.target_q_range for learner in model.learners] == [(-30.0, 0.0), (-10.0, 0.0)]
    assert model.settings.subgoal_low == [-2.5, -2.5] and model.settings.subgoal_high == [2.5, 2.5]
    goal = np.array([1.0, 1.0])
    assert model._reached(1, goal, goal) and not model._reached(1, goal + 1.0, goal)
    model.learn(400)
    for layer, buffer in enumerate(model.replay_buffer):
        stored = slice(0, buffer.pos)
        rewards = buffer.rewards[stored, 0]
        offset = buffer.next_observations["achieved_goal"][stored, 0] - buffer.observations["desired_goal"][stored, 0]
        # A stored reward is 0 exactly where the goal was reached, and every reached goal is terminal.
        np.testing.assert_array_equal(rewards, np.where(np.linalg.norm(offset, axis=-1) <= 0.45, 0.0, -1.0))
        assert buffer.dones[stored, 0][rewards == 0.0].all(), layer
    penalties = model.replay_buffer[1].penalties
    assert penalties.size() > 0 and (penalties.rewards[: penalties.size()] == -10.0).all()
    # Hindsight goals are rewarded by the same convention: 0 exactly on the relabelled goal.
    batch = model.replay_buffer[0].sample_transitions(256)
    distance = np.linalg.norm(batch.next_observations["achieved_goal"] - batch.observations["desired_goal"], axis=-1)
    np.testing.assert_array_equal(batch.rewards, np.where(distance <= 0.45, 0.0, -1.0))


def test_subgoal_threshold_judges_and_rewards_the_layers_below_the_top_by_distance(make_cfg) -> None:
    # The maze's own success test is 0.45; layer 0 judges its subgoals by 0.2, the top keeps the env's test.
    model = _hac_on_umaze(make_cfg, "algorithm.subgoal_threshold=0.2")
    goal = np.array([1.0, 1.0])
    assert model._reached(0, goal + 0.1, goal) and not model._reached(0, goal + 0.3, goal)
    assert model._reached(1, goal + 0.3, goal)
    model.learn(400)
    distances = {}
    for layer, threshold in [(0, 0.2), (1, 0.45)]:
        buffer = model.replay_buffer[layer]
        stored = slice(0, buffer.pos)
        offset = buffer.next_observations["achieved_goal"][stored, 0] - buffer.observations["desired_goal"][stored, 0]
        distances[layer] = np.linalg.norm(offset, axis=-1)
        expected = np.where(distances[layer] <= threshold, 0.0, -1.0)
        np.testing.assert_array_equal(buffer.rewards[stored, 0], expected)
        assert buffer.dones[stored, 0][expected == 0.0].all(), layer
        batch = buffer.sample_transitions(256)
        distance = np.linalg.norm(
            batch.next_observations["achieved_goal"] - batch.observations["desired_goal"], axis=-1
        )
        np.testing.assert_array_equal(batch.rewards, np.where(distance <= threshold, 0.0, -1.0))
        np.testing.assert_array_equal(batch.terminals[batch.relabelled], (distance <= threshold)[batch.relabelled])
    # Between the two thresholds layer 0 misses what the env would count as reached: the distinction is exercised.
    assert ((distances[0] > 0.2) & (distances[0] <= 0.45)).any()


def test_two_layer_smoke_run_on_point_maze(make_cfg, tracking_uri: str, tmp_path: Path) -> None:
    overrides = [
        "n_epochs=1",
        "eval_after_n_steps=300",
        "n_test_rollouts=1",
        "progress_bar=false",
        "save_model_freq=0",
        "env=PointMaze_UMaze-v3",
        "+env_kwargs.continuing_task=false",
        "algorithm=hac",
        "algorithm.time_scales=[10,-1]",
        "algorithm.end_on_success=true",
        "algorithm.learner.learning_starts=100",
        "algorithm.learner.batch_size=32",
    ]
    train(make_cfg(*overrides), run_dir=tmp_path / "maze")
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, filter_string=f"tags.run_dir = '{(tmp_path / 'maze').resolve()}'")
    assert run.info.status == "FINISHED" and run.data.tags["env"] == "PointMaze_UMaze-v3"
    # Every step pays -1 or 0, so a test episode's return is minus the steps it spent away from the goal.
    assert -300.0 <= run.data.metrics["test/mean_reward"] <= 0.0
    assert run.data.metrics["test/mean_reward"] >= -run.data.metrics["test/ep_length"]
    assert "train_layer0/q_mean" in run.data.metrics and "train_layer0/subgoal_success_rate" in run.data.metrics


def test_subgoals_are_bounded_by_the_goal_range_an_env_declares(make_cfg) -> None:
    # Blocks envs have unbounded goal spaces but declare goal_bounds(); every sampled goal lies inside them.
    env = make_vec_env("Blocks-o1-gripper_random-v1", {}, seed=0)
    model = build_hac(make_cfg("algorithm=hac", "env=Blocks-o1-gripper_random-v1").algorithm, env, 0, "cpu")
    low, high = np.array(model.settings.subgoal_low), np.array(model.settings.subgoal_high)
    assert low.shape == (6,) and (low < high).all()
    for _ in range(20):
        goal = env.reset()["desired_goal"][0]
        assert ((low <= goal) & (goal <= high)).all()


def test_two_layer_smoke_run_on_fetch_reach_with_restore(make_cfg, tracking_uri: str, tmp_path: Path) -> None:
    overrides = [*TINY, "algorithm=hac", "algorithm.learner.learning_starts=100", "algorithm.learner.batch_size=64"]
    run_dir = tmp_path / "run"
    score = train(make_cfg(*overrides), run_dir=run_dir)
    assert 0.0 <= score <= 2.0
    client = MlflowClient(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments, filter_string=f"tags.run_dir = '{run_dir.resolve()}'")
    assert run.info.status == "FINISHED" and run.data.tags["algorithm"] == "hac"
    for name in (
        "test/success_rate",
        "train/success_rate",
        "train_layer0/subgoal_success_rate",
        "train_layer1/subgoal_success_rate",
        "train_layer0/subgoal_test_penalty_rate",
        "train_layer0/q_mean",
        "train_layer1/q_mean",
        "test_layer0/success_rate",
        "test_layer1/success_rate",
    ):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [200, 400], name
    for layer in (0, 1):  # SB3's loss names per layer, dumped every log_interval episodes
        assert client.get_metric_history(run.info.run_id, f"train/layer{layer}/critic_loss")
    assert (run_dir / "checkpoint" / "replay_buffer.pkl").exists()
    resumed = tmp_path / "resumed"
    train(make_cfg(*overrides, "n_epochs=3", f"restore_from={run_dir}"), run_dir=resumed)
    (run,) = client.search_runs(experiments, filter_string=f"tags.run_dir = '{resumed.resolve()}'")
    # The resumed run holds the whole curve, the layers' metrics included: the restored epochs, then its own.
    for name in ("time/total_timesteps", "test_layer1/success_rate"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, name)) == [200, 400, 600], name


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_sac_layers_explore_with_their_random_action_share(make_cfg, share: float) -> None:
    """A SAC layer's `random_action_prob` replaces its exploring action by a uniform one; greedy actions keep it."""
    model = _hac_on_chain(
        make_cfg, "algorithm.learner.learning_starts=0", f"algorithm.per_model_class.sac.random_action_prob={share}"
    )
    learner = model.learners[0]
    learner.actor.log_std.weight.data.zero_()
    learner.actor.log_std.bias.data.fill_(-20.0)  # the policy's own sample is its greedy action
    cell = np.array([2.0], dtype=np.float32)
    obs = {"observation": cell, "achieved_goal": cell.copy(), "desired_goal": np.array([4.0], dtype=np.float32)}
    greedy = model._choose_action(0, obs, explore=False)
    explored = np.array([model._choose_action(0, obs, explore=True) for _ in range(200)])
    off_policy = np.abs(explored - greedy).max(axis=1) > 1e-3
    assert off_policy.sum() == (200 if share else 0)
    low, high = learner.action_space.low, learner.action_space.high
    assert np.all((explored >= low) & (explored <= high))
    if share:
        assert explored.std() > 0.25 * float(np.max(high - low))  # uniform: (high - low) / sqrt(12) = 0.29 of range


def test_saved_layer_buffers_hold_their_filled_rows_and_restore_penalties(make_cfg, tmp_path: Path) -> None:
    """A checkpoint's buffers (main store and penalties) cost their filled rows and come back equal."""
    model = _hac_on_chain(make_cfg, "algorithm.learner.learning_starts=10", "algorithm.subgoal_test_perc=1.0")
    model.learn(60)
    model.save_replay_buffer(tmp_path / "buffers.pkl")
    capacity = sum(buffer.actions.nbytes + buffer.penalties.actions.nbytes for buffer in model.replay_buffer)
    assert (tmp_path / "buffers.pkl").stat().st_size < capacity / 10
    saved = [(buffer.pos, buffer.penalties.pos, buffer.penalties.rewards.copy()) for buffer in model.replay_buffer]
    assert any(penalties > 0 for _, penalties, _ in saved)  # every subgoal tested: some were missed
    model.load_replay_buffer(tmp_path / "buffers.pkl")
    for buffer, (pos, penalty_pos, rewards) in zip(model.replay_buffer, saved, strict=True):
        assert (buffer.pos, buffer.penalties.pos) == (pos, penalty_pos)
        np.testing.assert_array_equal(buffer.penalties.rewards, rewards)
