"""FusedSAC computes SB3's SAC gradients, acts like SB3's policy, and overlaps training with a subprocess env."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from torch.func import functional_call

from ideas_baselines.her import HindsightReplayBuffer
from ideas_baselines.her.hindsight_replay_buffer import FlatBatch
from ideas_baselines.sac import FusedSAC, fused_sac
from interface.envs import goal_functions, make_env, make_vec_env
from util.subproc_vec_env import GoalSubprocVecEnv, TrainWhileStepping


def _model(
    n_critics: int = 2,
    subprocess: bool = False,
    learning_starts: int = 100,
    net_arch: tuple[int, ...] = (32, 32),
    random_action_prob: float = 0.0,
) -> FusedSAC:
    env = make_vec_env("FetchReach-v4", {}, seed=0, normalize_obs=True, subprocess=subprocess)
    model = FusedSAC(
        "MultiInputPolicy",
        env,
        seed=0,
        device="cpu",
        learning_starts=learning_starts,
        batch_size=32,
        gamma=0.95,
        replay_buffer_class=HindsightReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4},
        policy_kwargs={"net_arch": list(net_arch), "n_critics": n_critics},
        random_action_prob=random_action_prob,
    )
    model.replay_buffer.attach_goal_functions(*goal_functions(env))  # type: ignore[union-attr]
    return model


def _grads(parameters: list[th.Tensor]) -> list[th.Tensor]:
    return [p.grad.clone() if p.grad is not None else th.zeros_like(p) for p in parameters]


@pytest.mark.parametrize(
    ("n_critics", "clamp_targets", "net_arch"),
    [(1, False, (32, 32)), (2, False, (32, 32)), (1, True, (32, 32)), (2, True, (32, 32)), (2, False, (24, 32, 16))],
)
def test_fused_gradients_equal_sb3_losses(
    n_critics: int, clamp_targets: bool, net_arch: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One fused step's gradients equal those of SB3's entropy, critic and actor losses on the same batch.

    The actor loss is taken against the critic before this step's update (the documented difference from SB3,
    whose actor sees the updated critic). With `clamp_targets` the target critics end in an nn.Hardtanh (as
    HAC's Q bound), between the quartiles of their values on this batch so that it cuts targets on both sides:
    the fast path must clamp too.
    """
    model = _model(n_critics=n_critics, net_arch=net_arch)
    model.learn(150)  # fills the buffer and moves the weights away from their initial values
    policy = model.policy
    n = 32
    batch = FlatBatch(
        observations=th.randn(2 * n, 16),
        actions=th.rand(n, 4) * 2 - 1,
        rewards=-th.randint(0, 2, (n, 1)).float(),
        dones=th.randint(0, 2, (n, 1)).float(),
    )
    if clamp_targets:
        with th.no_grad():
            values = policy.critic_target.q_networks[0](th.cat([batch.observations[n:], batch.actions], dim=1))
        low, high = values.quantile(0.25).item(), values.quantile(0.75).item()
        for q_network in policy.critic_target.q_networks:
            q_network.append(th.nn.Hardtanh(low, high))
        model._fast_path_read = False  # read again, as at the first training step of a model built this way
        assert model._lean is not None and model._lean.target_q_range == (low, high)
    monkeypatch.setattr(model, "_sample_batch", lambda batch_size: (batch, model.gamma))
    monkeypatch.setattr(fused_sac, "joint_adam_step", lambda optimizers: None)  # keep the gradients and weights
    target_before = [p.detach().clone() for p in policy.critic_target.parameters()]

    th.manual_seed(7)
    model._fused_train(1, n)
    actor_params, critic_params = list(policy.actor.parameters()), list(policy.critic.parameters())
    fused_actor, fused_critic = _grads(actor_params), _grads(critic_params)
    fused_ent = model.log_ent_coef.grad.clone()  # type: ignore[union-attr]

    # The reference: SB3's modules and loss formulas, autograd per loss, the same noise (same seed, same batch).
    for p in [*actor_params, *critic_params, model.log_ent_coef]:
        p.grad = None
    keys = list(model.observation_space.spaces)  # type: ignore[attr-defined]
    sizes = [model.observation_space[k].shape[0] for k in keys]  # type: ignore[index]

    def as_dict(flat: th.Tensor) -> dict[str, th.Tensor]:
        return dict(zip(keys, flat.split(sizes, dim=1)))

    th.manual_seed(7)
    both_actions, both_log_prob = policy.actor.action_log_prob(as_dict(batch.observations))
    actions_pi, next_actions = both_actions.split(n)
    log_prob, next_log_prob = both_log_prob.reshape(-1, 1).split(n)
    observations, next_observations = (as_dict(half) for half in batch.observations.split(n))
    ent_coef = model.log_ent_coef.detach().exp()
    ent_coef_loss = -(model.log_ent_coef * (log_prob + model.target_entropy).detach()).mean()
    with th.no_grad():
        with_target = dict(zip((k for k, _ in policy.critic_target.named_parameters()), target_before))
        next_q = th.cat(functional_call(policy.critic_target, with_target, (next_observations, next_actions)), dim=1)
        next_q = next_q.min(dim=1, keepdim=True).values - ent_coef * next_log_prob
        target_q = batch.rewards + (1 - batch.dones) * model.gamma * next_q
    current_q = policy.critic(observations, batch.actions)
    critic_loss = 0.5 * sum(th.nn.functional.mse_loss(q, target_q) for q in current_q)
    frozen = {name: p.detach() for name, p in policy.critic.named_parameters()}
    q_pi = (
        th.cat(functional_call(policy.critic, frozen, (observations, actions_pi)), dim=1)
        .min(dim=1, keepdim=True)
        .values
    )
    actor_loss = (ent_coef * log_prob - q_pi).mean()
    expected_critic = th.autograd.grad(critic_loss, critic_params, allow_unused=True)
    expected_actor = th.autograd.grad(actor_loss, actor_params, retain_graph=True, allow_unused=True)
    (expected_ent,) = th.autograd.grad(ent_coef_loss, [model.log_ent_coef])

    def close(got: list[th.Tensor], expected: tuple[th.Tensor | None, ...]) -> None:
        for g, e in zip(got, expected):
            th.testing.assert_close(g, th.zeros_like(g) if e is None else e, rtol=1e-4, atol=1e-5)

    close(fused_critic, expected_critic)
    close(fused_actor, expected_actor)
    th.testing.assert_close(fused_ent, expected_ent, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in fused_actor) and any(g.abs().sum() > 0 for g in fused_critic)
    # The target critics moved by tau towards the critics (weights unchanged: the steps were disabled).
    for before, after, source in zip(target_before, policy.critic_target.parameters(), policy.critic.parameters()):
        th.testing.assert_close(after.detach(), before + model.tau * (source.detach() - before))


def test_actions_match_sb3_policy() -> None:
    """The numpy actor's deterministic actions equal SB3's policy; sampled ones have SB3's distribution."""
    model = _model()
    model.learn(150)
    observation = model.env.reset()  # type: ignore[union-attr]
    ours, state = model.predict(observation, deterministic=True)
    theirs, _ = model.policy.predict(observation, deterministic=True)
    assert state is None
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    # Sampled actions: not deterministic, and the same mean and spread as SB3's within 5 standard errors.
    draws = 20_000
    repeated = {k: np.repeat(v, draws, axis=0) for k, v in observation.items()}
    ours_sampled, _ = model.predict(repeated, deterministic=False)
    theirs_sampled, _ = model.policy.predict(repeated, deterministic=False)
    spread = theirs_sampled.std(axis=0)
    assert ours_sampled.std(axis=0).min() > 1e-3
    tolerance = 5 * spread * np.sqrt(2 / draws)
    assert (np.abs(ours_sampled.mean(axis=0) - theirs_sampled.mean(axis=0)) < tolerance).all()
    assert (np.abs(ours_sampled.std(axis=0) - spread) < tolerance).all()


def test_log_probabilities_match_sb3() -> None:
    """The hand-written actor pass gives SB3's actions and squashed-Gaussian log-probabilities for the same noise."""
    model = _model()
    lean = model._lean
    assert lean is not None
    observation = {k: th.randn(64, *space.shape) for k, space in model.observation_space.spaces.items()}  # type: ignore[attr-defined]
    th.manual_seed(3)
    ours = lean.actor_forward(lean.features(observation))
    th.manual_seed(3)
    actions, log_prob = model.policy.actor.action_log_prob(observation)
    th.testing.assert_close(ours.action, actions)
    th.testing.assert_close(ours.log_prob, log_prob, rtol=1e-4, atol=1e-4)


def test_flat_sample_is_the_normalised_dict_sample() -> None:
    """`sample_flat` returns the same relabelled transitions as `sample`, keys concatenated in space order."""
    model = _model(learning_starts=1000)  # only the buffer matters here
    model.learn(300)
    buffer, env = model.replay_buffer, model.get_vec_normalize_env()
    assert isinstance(buffer, HindsightReplayBuffer) and isinstance(env, VecNormalize)
    np.random.seed(5)
    flat = buffer.sample_flat(64, env)
    np.random.seed(5)
    reference = buffer.sample(64, env)
    keys = list(model.observation_space.spaces)  # type: ignore[attr-defined]
    expected = th.cat(
        [
            th.cat([reference.observations[k] for k in keys], 1),
            th.cat([reference.next_observations[k] for k in keys], 1),
        ]
    )
    th.testing.assert_close(flat.observations, expected, rtol=1e-5, atol=1e-5)
    th.testing.assert_close(flat.rewards, reference.rewards)
    th.testing.assert_close(flat.dones, reference.dones)
    th.testing.assert_close(flat.actions, reference.actions)


def test_joint_adam_step_equals_each_optimizers_step() -> None:
    """One functional Adam call over several optimizers updates weights and states exactly as their `step()`."""
    th.manual_seed(0)
    weights = [th.nn.Parameter(th.randn(5, 3)) for _ in range(3)]
    copies = [th.nn.Parameter(w.detach().clone()) for w in weights]

    def optimizers(params: list[th.nn.Parameter]) -> list[th.optim.Optimizer]:
        return [th.optim.Adam(params[:2], lr=1e-2, fused=True), th.optim.Adam(params[2:], lr=1e-2, fused=True)]

    ours, theirs = optimizers(weights), optimizers(copies)
    for _ in range(4):
        gradients = [th.randn(5, 3) for _ in weights]
        for w, c, g in zip(weights, copies, gradients):
            w.grad, c.grad = g.clone(), g.clone()
        fused_sac.joint_adam_step(ours)
        for optimizer in theirs:
            optimizer.step()
        for w, c in zip(weights, copies):
            th.testing.assert_close(w, c, rtol=0, atol=0)
    assert int(ours[0].state[weights[0]]["step"]) == 4


def test_save_load_round_trip(tmp_path: Path) -> None:
    """A saved FusedSAC loads with identical actions and keeps training with its optimizer state."""
    model = _model()
    model.learn(200)
    model.save(tmp_path / "model.zip")
    loaded = FusedSAC.load(tmp_path / "model.zip", env=model.env, device="cpu")
    observation = model.env.reset()  # type: ignore[union-attr]
    np.testing.assert_array_equal(
        model.predict(observation, deterministic=True)[0], loaded.predict(observation, deterministic=True)[0]
    )
    state = loaded.critic.optimizer.state_dict()["state"]
    assert state and all(int(s["step"]) == model._n_updates for s in state.values())
    assert loaded._lean is not None and loaded._numpy_actor is not None


def test_subprocess_env_overlaps_every_gradient_step() -> None:
    """With a subprocess env, each gradient step runs while the env steps, and none is lost or added."""
    model = _model(subprocess=True)
    env = model.env
    overlap = env.venv if isinstance(env, VecNormalize) else env  # type: ignore[union-attr]
    assert isinstance(overlap, TrainWhileStepping) and isinstance(overlap.venv, GoalSubprocVecEnv)
    calls: list[int] = []
    fused_train: Callable[[int, int], None] = model._fused_train

    def counting(steps: int, batch_size: int) -> None:
        calls.append(steps)
        fused_train(steps, batch_size)

    model._fused_train = counting  # type: ignore[method-assign]
    model.learn(250)
    assert model._pending_gradient_steps == 0
    assert sum(calls) == model._n_updates == 250 - 100  # one gradient step per env step after learning_starts
    assert overlap.hook is not None
    # HER's goal functions are read from the local copy: no env object crosses the process boundary.
    compute_reward, _ = goal_functions(env)  # type: ignore[arg-type]
    assert compute_reward(np.zeros((3, 3)), np.zeros((3, 3)), [{}] * 3).shape == (3,)
    env.close()  # type: ignore[union-attr]


def test_dummy_and_subprocess_envs_step_identically() -> None:
    """The subprocess env gives the same seeded observations and rewards as the in-process one."""
    factories = [lambda: make_env("FetchReach-v4")]
    envs = [DummyVecEnv(factories), GoalSubprocVecEnv(factories)]
    for env in envs:
        env.seed(3)
    first = [env.reset() for env in envs]
    np.testing.assert_array_equal(first[0]["observation"], first[1]["observation"])
    action = np.full((1, 4), 0.5, dtype=np.float32)
    steps = [env.step(action) for env in envs]
    np.testing.assert_array_equal(steps[0][0]["achieved_goal"], steps[1][0]["achieved_goal"])
    np.testing.assert_array_equal(steps[0][1], steps[1][1])
    for env in envs:
        env.close()


def test_env_worker_leaves_interrupts_to_the_parent_and_closes_after_dying() -> None:
    """Ctrl-C reaches the whole process group: the worker ignores it; a worker killed anyway still closes."""
    env = GoalSubprocVecEnv([lambda: make_env("FetchReach-v4")])
    env.reset()
    worker = env.processes[0]
    os.kill(worker.pid, signal.SIGINT)  # type: ignore[arg-type]
    time.sleep(0.3)
    assert worker.is_alive()
    env.step(np.zeros((1, 4), dtype=np.float32))  # still stepping
    env.step_async(np.zeros((1, 4), dtype=np.float32))  # interrupted mid-step: the parent is waiting
    os.kill(worker.pid, signal.SIGKILL)  # type: ignore[arg-type]
    worker.join(5)
    env.close()  # no EOFError / BrokenPipeError from the dead worker
    assert env.closed and not worker.is_alive()


def test_modules_added_after_construction_send_training_to_sb3(monkeypatch: pytest.MonkeyPatch) -> None:
    """A module the fast path does not know, appended to the target critics before training, is not skipped:
    SB3's path runs."""
    model = _model()
    for q_network in model.critic_target.q_networks:
        q_network.append(th.nn.Tanh())
    model.learn(150)
    assert model._lean is None and model._numpy_actor is None
    assert model._n_updates == 50  # trained, by SB3's own train()


def test_buffers_with_their_own_sample_are_sampled_through_it() -> None:
    """The flat fast path stands for `sample` only where that is HER's own (HAC's buffer mixes in penalties)."""
    calls: list[int] = []

    class CountingBuffer(HindsightReplayBuffer):
        def sample(self, batch_size: int, env: VecNormalize | None = None):  # type: ignore[no-untyped-def,override]
            calls.append(batch_size)
            return super().sample(batch_size, env)

    env = make_vec_env("FetchReach-v4", {}, seed=0, normalize_obs=True)
    model = FusedSAC(
        "MultiInputPolicy", env, seed=0, device="cpu", learning_starts=100, batch_size=32,
        replay_buffer_class=CountingBuffer, policy_kwargs={"net_arch": [32, 32]},
    )  # fmt: skip
    model.replay_buffer.attach_goal_functions(*goal_functions(env))  # type: ignore[union-attr]
    model.learn(120)
    assert model._lean is not None and calls == [32] * 20


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 0, 0), (0.3, 240, 360), (1.0, 1000, 1000)])
def test_random_action_share_replaces_that_share_of_exploring_actions(
    share: float, low: int, high: int, tmp_path: Path
) -> None:
    """After warm-up, `random_action_prob` of the exploring actions are uniform in the box, the rest the policy's.

    The actor's spread is shrunk to nothing, so the policy's own sample is its deterministic action and any other
    action is a random one. The share survives save and load.
    """
    model = _model(learning_starts=0, random_action_prob=share)
    model.actor.log_std.weight.data.zero_()
    model.actor.log_std.bias.data.fill_(-20.0)
    model._last_obs = model.env.reset()  # type: ignore[assignment,union-attr]
    greedy = model.policy.scale_action(model.predict(model._last_obs, deterministic=True)[0])  # type: ignore[arg-type]
    np.random.seed(0)
    samples = [model._sample_action(0) for _ in range(1000)]
    scaled = np.concatenate([buffer_action for _, buffer_action in samples])
    random = np.abs(scaled - greedy).max(axis=1) > 1e-3
    assert low <= random.sum() <= high
    assert np.allclose(np.concatenate([action for action, _ in samples]), model.policy.unscale_action(scaled))
    if random.any():
        uniform = scaled[random]
        assert np.all(np.abs(uniform) <= 1.0) and 0.5 < uniform.std() < 0.65  # U(-1, 1) has std 0.577
    model.save(tmp_path / "model")
    assert FusedSAC.load(tmp_path / "model", device="cpu").random_action_prob == share
