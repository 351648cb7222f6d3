"""SAC with a fused gradient step: SB3's losses, computed with far fewer Python and dispatcher hops per env step."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.utils import is_vectorized_observation
from stable_baselines3.common.vec_env import unwrap_vec_wrapper
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from torch import nn
from torch.optim.adam import adam as functional_adam

from ideas_baselines.her.hindsight_replay_buffer import FlatBatch, HindsightReplayBuffer
from ideas_baselines.sac.lean_networks import Layer, LeanNetworks, lean_networks
from util.subproc_vec_env import TrainWhileStepping


def _skip_unchanged_mode_switches(policy: nn.Module) -> None:
    """SB3 switches the policy to eval mode before every env step, which walks every submodule each time;
    the fast path never switches it back, so only real changes need to reach the modules."""
    switch = policy.set_training_mode

    def set_training_mode(mode: bool) -> None:
        if mode != policy.training:
            switch(mode)

    policy.set_training_mode = set_training_mode  # type: ignore[method-assign]


_ADAM_SETTINGS = (
    "betas",
    "lr",
    "weight_decay",
    "eps",
    "maximize",
    "foreach",
    "capturable",
    "differentiable",
    "fused",
    "decoupled_weight_decay",
    "amsgrad",
)


def _functional_adam_inputs(
    optimizers: list[th.optim.Optimizer],
) -> tuple[list[list[th.Tensor]], dict[str, Any]] | None:
    """(params, grads, exp_avgs, exp_avg_sqs, steps) and the shared settings of Adam optimizers whose every
    parameter has a gradient and state; None where one functional call cannot stand for their `step()`s."""
    groups = [(optimizer, group) for optimizer in optimizers for group in optimizer.param_groups]
    settings = {key: groups[0][1].get(key) for key in _ADAM_SETTINGS}
    if settings["amsgrad"]:
        return None
    tensors: list[list[th.Tensor]] = [[], [], [], [], []]
    for optimizer, group in groups:
        if not isinstance(optimizer, th.optim.Adam) or any(group.get(key) != value for key, value in settings.items()):
            return None
        for parameter in group["params"]:
            state = optimizer.state.get(parameter)
            if not state or parameter.grad is None:
                return None
            for values, tensor in zip(
                tensors, (parameter, parameter.grad, *(state[k] for k in ("exp_avg", "exp_avg_sq", "step")))
            ):
                values.append(tensor)
    return tensors, settings


def joint_adam_step(optimizers: list[th.optim.Optimizer]) -> None:
    """Step several Adam optimizers with one call of torch's functional Adam over all their parameters.

    The same update as each optimizer's `step()` (their own state tensors are updated), without their per-call
    bookkeeping, which for small networks costs more than the update. Falls back to `step()` while any
    parameter has no state yet (the first step creates it), or when the groups' settings differ.
    """
    inputs = _functional_adam_inputs(optimizers)
    if inputs is None:
        for optimizer in optimizers:
            optimizer.step()
        return
    (params, grads, exp_avgs, exp_avg_sqs, steps), settings = inputs
    beta1, beta2 = settings.pop("betas")
    settings.pop("amsgrad")
    functional_adam(
        params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, beta1=beta1, beta2=beta2, **settings
    )


class FusedSAC(SAC):
    """Soft Actor-Critic (SB3's SAC: same networks, losses, save files and API) with a faster training loop.

    Per gradient step, SB3 runs three forward/backward/optimizer rounds through nn.Module calls and switches
    training mode twice; this class computes the entropy, critic and actor losses' gradients in one pass written
    out on the policy's own weights (:mod:`ideas_baselines.sac.lean_networks`, no autograd graph), steps the
    three (fused) Adam optimizers and updates the target critics with one foreach lerp. Rollout and test
    actions come from a numpy copy-free view of the actor.

    The one difference in the maths: the actor loss uses the critic as it was before this gradient step's
    critic update (as in rlkit's SAC and the paper's simultaneous updates), where SB3 uses the updated critic.

    When the training env contains a :class:`TrainWhileStepping` wrapper (a subprocess env), the gradient step
    of env step t runs while the env computes step t + 1, so the action of step t + 1 comes from the policy
    before that gradient step (a lag of one update).

    Policies the fast path does not cover (images, gSDE, batch norm, non-ReLU activations, custom extractors)
    train with SB3's own code. Constructor arguments are SAC's, plus `random_action_prob`: the probability per
    env step (after `learning_starts`) that a uniformly random action replaces the policy's sample, the HER
    paper's exploration for tasks where the policy's own spread rarely reaches the object (0 = SAC's own).
    """

    def __init__(self, *args: Any, random_action_prob: float = 0.0, **kwargs: Any) -> None:
        if not 0.0 <= random_action_prob <= 1.0:
            raise ValueError(f"random_action_prob must lie in [0, 1], got {random_action_prob!r}")
        self.random_action_prob = float(random_action_prob)
        policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
        if policy_kwargs.get("optimizer_class", th.optim.Adam) is th.optim.Adam:
            policy_kwargs["optimizer_kwargs"] = {"fused": True, **(policy_kwargs.get("optimizer_kwargs") or {})}
        super().__init__(*args, policy_kwargs=policy_kwargs, **kwargs)
        self._pending_gradient_steps = 0

    def _setup_model(self) -> None:
        super()._setup_model()
        if self.ent_coef_optimizer is not None:
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=self.lr_schedule(1), fused=True)
        self._fast_path: tuple[LeanNetworks, NumpyActor | None] | None = None
        self._fast_path_read = False
        self._pending_gradient_steps = 0

    @property
    def _lean(self) -> LeanNetworks | None:
        """The policy's weights for the fast path, or None where SB3's code must run.

        Read at the first training step or action after construction or `load`, so that modules a caller adds
        right after construction (e.g. HAC's target-Q clamp) send the model to SB3's path instead of being
        skipped.
        """
        if not self._fast_path_read:
            self._fast_path_read = True
            lean = lean_networks(self)
            if lean is not None:
                self._fast_path = (lean, NumpyActor(lean) if self.device.type == "cpu" else None)
                _skip_unchanged_mode_switches(self.policy)
        return self._fast_path[0] if self._fast_path is not None else None

    @property
    def _numpy_actor(self) -> NumpyActor | None:
        return self._fast_path[1] if self._lean is not None else None  # type: ignore[index]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_fast_path", "_fast_path_read", "_pending_gradient_steps"]

    def _overlap_wrapper(self) -> TrainWhileStepping | None:
        wrapper = unwrap_vec_wrapper(self.env, TrainWhileStepping) if self.env is not None else None
        return wrapper if isinstance(wrapper, TrainWhileStepping) else None

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        result = super()._setup_learn(*args, **kwargs)
        wrapper = self._overlap_wrapper()
        if wrapper is not None:
            wrapper.set_hook(self._run_pending_gradient_steps)
        return result

    def learn(self, *args: Any, **kwargs: Any) -> FusedSAC:  # type: ignore[override]
        """SB3's `learn`; gradient steps still deferred to the next env step are done before it returns."""
        try:
            super().learn(*args, **kwargs)
        finally:
            self._run_pending_gradient_steps()
        return self

    def _overlapping(self) -> bool:
        wrapper = self._overlap_wrapper()
        return wrapper is not None and wrapper.hook is not None

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """Do `gradient_steps` updates now, or, with an overlapping env, while the next env step computes."""
        if self._lean is None:
            super().train(gradient_steps, batch_size)
        elif self._overlapping():
            self._pending_gradient_steps += gradient_steps
        else:
            self._fused_train(gradient_steps, batch_size)

    def _run_pending_gradient_steps(self) -> None:
        steps, self._pending_gradient_steps = self._pending_gradient_steps, 0
        if steps > 0:
            self._fused_train(steps, self.batch_size)

    def _sample_batch(self, batch_size: int) -> tuple[FlatBatch, th.Tensor | float]:
        """A batch with flat observations (and the discounts of n-step buffers, else gamma)."""
        assert self._lean is not None and self.replay_buffer is not None
        # The flat sample stands for `sample` only where that is HER's own (HAC's buffer mixes in penalties).
        if type(self.replay_buffer).sample is HindsightReplayBuffer.sample:
            return self.replay_buffer.sample_flat(batch_size, env=self._vec_normalize_env), self.gamma  # type: ignore[attr-defined]
        data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
        both = th.cat([self._lean.features(data.observations), self._lean.features(data.next_observations)])
        discounts = data.discounts if data.discounts is not None else self.gamma
        return FlatBatch(both, data.actions, data.rewards, data.dones), discounts

    def _fused_train(self, gradient_steps: int, batch_size: int) -> None:
        lean = self._lean
        assert lean is not None
        optimizers = [self.actor.optimizer, self.critic.optimizer]
        if self.ent_coef_optimizer is not None:
            optimizers.append(self.ent_coef_optimizer)
        self._update_learning_rate(optimizers)
        actor_params, critic_params = lean.actor_parameters(), lean.critic_parameters()
        target_params = lean.critic_target_parameters()
        logged = []  # per step: ent_coef, actor loss, critic loss, ent_coef loss
        for gradient_step in range(gradient_steps):
            batch, discounts = self._sample_batch(batch_size)
            if self.ent_coef_optimizer is not None:
                ent_coef = self.log_ent_coef.detach().exp()
            else:
                ent_coef = self.ent_coef_tensor
            actor_grads, critic_grads, values = lean.gradients(batch, discounts, ent_coef, float(self.target_entropy))
            for parameter, grad in zip([*actor_params, *critic_params], [*actor_grads, *critic_grads]):
                parameter.grad = grad
            if self.ent_coef_optimizer is not None:
                self.log_ent_coef.grad = values[3].reshape(self.log_ent_coef.shape).clone()
                values[3] = values[3] * self.log_ent_coef.detach().reshape(())  # the loss itself, for the log
            joint_adam_step(optimizers)
            if gradient_step % self.target_update_interval == 0:
                with th.no_grad():
                    th._foreach_lerp_(target_params, critic_params, self.tau)
            logged.append(values)
        self._n_updates += gradient_steps
        means = th.stack(logged).mean(dim=0).tolist()
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/ent_coef", means[0])
        self.logger.record("train/actor_loss", means[1])
        self.logger.record("train/critic_loss", means[2])
        if self.ent_coef_optimizer is not None:
            self.logger.record("train/ent_coef_loss", means[3])

    def _flat_observation(self, observation: np.ndarray | dict[str, np.ndarray]) -> np.ndarray:
        assert self._lean is not None
        if isinstance(observation, dict):
            n = len(next(iter(observation.values())))
            return np.concatenate([observation[key].reshape(n, -1) for key in self._lean.obs_keys or ()], axis=1)
        return observation.reshape(len(observation), -1)

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exploration actions from the numpy actor (SB3's path during warm-up and off the CPU), each replaced by
        a uniformly random one with probability `random_action_prob`."""
        if self.num_timesteps < learning_starts:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        if self._numpy_actor is None or self._last_obs is None:
            scaled_action = super()._sample_action(learning_starts, action_noise, n_envs)[1]
        else:
            scaled_action = self._numpy_actor(self._flat_observation(self._last_obs), deterministic=False)  # type: ignore[arg-type]
            if action_noise is not None:
                scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        if self.random_action_prob > 0.0:
            replace = np.random.random_sample(len(scaled_action)) < self.random_action_prob
            uniform = np.random.uniform(-1.0, 1.0, scaled_action.shape).astype(scaled_action.dtype)
            scaled_action = np.where(replace[:, None], uniform, scaled_action)
        return self.policy.unscale_action(scaled_action), scaled_action

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """SB3's `predict`; batched observations on the CPU go through the numpy actor."""
        if self._numpy_actor is None or not is_vectorized_observation(observation, self.observation_space):
            return super().predict(observation, state, episode_start, deterministic)
        scaled_action = self._numpy_actor(self._flat_observation(observation), deterministic)
        return self.policy.unscale_action(scaled_action), None


class NumpyActor:
    """The actor's forward pass in numpy on views of its weights, for single env steps.

    A batch of one pays torch's per-op overhead many times over its arithmetic; numpy views share memory with
    the parameters, so optimizer steps and `load` are seen at once. Exploration noise comes from numpy's
    global generator (seeded with the run's seed).
    """

    def __init__(self, lean: LeanNetworks) -> None:
        def view(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
            weight, bias = layer
            return weight.detach().numpy().T, bias.detach().numpy()

        self.hidden = [view(layer) for layer in lean.actor_hidden]
        self.mu = view(lean.actor_mu)
        self.log_std = view(lean.actor_log_std)

    def __call__(self, features: np.ndarray, deterministic: bool) -> np.ndarray:
        """Actions in [-1, 1] for flat float observations of shape (n, features)."""
        x = features.astype(np.float32, copy=False)
        for weight, bias in self.hidden:
            x = np.maximum(x @ weight + bias, 0)
        mean = x @ self.mu[0] + self.mu[1]
        if deterministic:
            return np.tanh(mean)
        log_std = np.clip(x @ self.log_std[0] + self.log_std[1], LOG_STD_MIN, LOG_STD_MAX)
        return np.tanh(mean + np.exp(log_std) * np.random.standard_normal(mean.shape).astype(np.float32))
