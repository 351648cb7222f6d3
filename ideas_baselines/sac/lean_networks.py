"""SAC's losses and their gradients computed by hand on an SB3 SAC policy's own weights.

For the small Linear+ReLU networks of goal-conditioned RL a gradient step is dominated by per-operation
overhead, not arithmetic: autograd records a graph node per operation and replays it. Writing the backward
pass out (a few matrix products per layer) halves the number of operations and drops the graph entirely.
`tests/test_fused_sac.py` checks every gradient against autograd on SB3's own modules.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN
from torch import nn

from ideas_baselines.her.hindsight_replay_buffer import FlatBatch

Layer = tuple[th.Tensor, th.Tensor]
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
_SQUASH_EPSILON = 1e-6  # as SB3's SquashedDiagGaussianDistribution


class MlpPass(NamedTuple):
    """The input of every layer of a forward pass (what its backward pass needs) and the output."""

    inputs: list[th.Tensor]
    output: th.Tensor


class ActorPass(NamedTuple):
    """A forward pass of SAC's squashed Gaussian actor, keeping what its backward pass needs."""

    hidden: MlpPass  # the hidden layers; ReLU after each, `hidden.output` is the latent
    log_std_unclamped: th.Tensor  # True where log_std was inside SB3's clamp range
    std: th.Tensor
    noise: th.Tensor
    action: th.Tensor  # in [-1, 1]
    one_minus_action_squared: th.Tensor
    log_prob: th.Tensor  # shape (rows,)


def linear_layers(module: nn.Module) -> list[Layer] | None:
    """(weight, bias) of every Linear in a Linear/ReLU stack, or None if the module is anything else."""
    layers: list[Layer] = []
    for child in module.children() if isinstance(module, nn.Sequential) else [module]:
        if isinstance(child, nn.Linear) and child.bias is not None:
            layers.append((child.weight, child.bias))
        elif not isinstance(child, nn.ReLU):
            return None
    return layers


def mlp_forward(x: th.Tensor, layers: list[Layer], relu_last: bool = False) -> MlpPass:
    """Linear layers with ReLU between them (and after the last with `relu_last`)."""
    inputs = []
    last = len(layers) - 1
    for index, (weight, bias) in enumerate(layers):
        inputs.append(x)
        x = th.addmm(bias, x, weight.t())
        if index < last or relu_last:
            x = x.clamp_min_(0)
    return MlpPass(inputs, x)


def mlp_backward(
    grad_output: th.Tensor, layers: list[Layer], inputs: list[th.Tensor], weight_grads: list[th.Tensor] | None = None
) -> th.Tensor | None:
    """Back-propagate `grad_output` (the gradient at the last layer's pre-activation output).

    Appends (weight, bias) gradients in layer order to `weight_grads` when given; returns the gradient with
    respect to the network input when no weight gradients are asked for, else None.
    """
    grads: list[th.Tensor] = []
    grad = grad_output
    for index in range(len(layers) - 1, -1, -1):
        weight, _ = layers[index]
        if weight_grads is not None:
            grads += [grad.sum(dim=0), grad.t() @ inputs[index]]
            if index == 0:
                break
        grad = grad @ weight
        if index > 0:
            grad = grad.mul_(inputs[index].sign())  # ReLU's derivative: its output is >= 0, so sign is 0 or 1
    if weight_grads is None:
        return grad
    weight_grads.extend(reversed(grads))
    return None


class LeanNetworks(NamedTuple):
    """Direct views of an SB3 SAC policy's weights, and SAC's gradient step written out on them.

    The tensors are the policy's own parameters: optimizer steps, `load` and `set_parameters` act on them.
    """

    obs_keys: tuple[str, ...] | None
    actor_hidden: list[Layer]
    actor_mu: Layer
    actor_log_std: Layer
    critics: list[list[Layer]]
    critic_targets: list[list[Layer]]
    target_q_range: tuple[float, float] | None = None  # (low, high) of a clamp after every target critic

    def features(self, observations: dict[str, th.Tensor] | th.Tensor) -> th.Tensor:
        """The flattened network input: Dict observations concatenated in the space's key order."""
        if self.obs_keys is None:
            assert isinstance(observations, th.Tensor)
            return observations.flatten(1).float()
        assert isinstance(observations, dict)
        return th.cat([observations[key].flatten(1).float() for key in self.obs_keys], dim=1)

    def actor_forward(self, features: th.Tensor) -> ActorPass:
        """Sampled actions and log-probabilities, as SB3's actor computes them (same noise for the same seed)."""
        hidden = mlp_forward(features, self.actor_hidden, relu_last=True)
        mean = th.addmm(self.actor_mu[1], hidden.output, self.actor_mu[0].t())
        raw_log_std = th.addmm(self.actor_log_std[1], hidden.output, self.actor_log_std[0].t())
        log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        std = log_std.exp()
        noise = th.randn_like(mean)
        action = th.tanh(th.addcmul(mean, std, noise))
        one_minus_action_squared = 1 - action.square()
        gaussian = (-0.5 * noise.square() - log_std).sum(dim=1) - _HALF_LOG_TWO_PI * mean.shape[1]
        log_prob = gaussian - th.log(one_minus_action_squared + _SQUASH_EPSILON).sum(dim=1)
        return ActorPass(hidden, log_std == raw_log_std, std, noise, action, one_minus_action_squared, log_prob)

    def min_q(self, critics: list[list[Layer]], x: th.Tensor) -> tuple[th.Tensor, list[MlpPass], th.Tensor | None]:
        """min over `critics` of Q(x), shape (rows, 1), their passes, and which critic was the minimum."""
        passes = [mlp_forward(x, layers) for layers in critics]
        if len(passes) == 1:
            return passes[0].output, passes, None
        values, chosen = th.cat([p.output for p in passes], dim=1).min(dim=1, keepdim=True)
        return values, passes, chosen

    def gradients(
        self, batch: FlatBatch, discounts: th.Tensor | float, ent_coef: th.Tensor, target_entropy: float
    ) -> tuple[list[th.Tensor], list[th.Tensor], th.Tensor]:
        """Gradients of SB3's SAC losses for one batch: (actor grads, critic grads, [ent_coef, actor loss,
        critic loss, d ent_coef_loss / d log ent_coef]); grads in `actor_parameters`/`critic_parameters` order.

        Losses as in SB3's `SAC.train`: critic 0.5 * sum of MSEs to r + (1 - done) * gamma * (min target Q -
        alpha * next log-prob), the target Q clamped to `target_q_range` if set; actor mean(alpha * log-prob - min Q), taken against the critic before this
        step's update; entropy coefficient -mean(log alpha * (log-prob + target entropy)).
        """
        with th.no_grad():
            n = len(batch.actions)
            observations, next_observations = batch.observations.split(n)
            actor = self.actor_forward(batch.observations)
            actions_pi, next_actions = actor.action.split(n)
            log_prob, next_log_prob = actor.log_prob.reshape(-1, 1).split(n)
            next_q, _, _ = self.min_q(self.critic_targets, th.cat([next_observations, next_actions], dim=1))
            if self.target_q_range is not None:  # clamping each target then the minimum = clamping the minimum
                next_q = next_q.clamp(*self.target_q_range)
            target_q = batch.rewards + (1 - batch.dones) * discounts * (next_q - ent_coef * next_log_prob)

            critic_grads: list[th.Tensor] = []
            critic_loss = th.zeros(())
            x = th.cat([observations, batch.actions], dim=1)
            for layers in self.critics:
                current = mlp_forward(x, layers)
                error = current.output - target_q
                critic_loss = critic_loss + 0.5 * error.square().mean()
                mlp_backward(error / n, layers, current.inputs, critic_grads)

            q_pi, passes, chosen = self.min_q(self.critics, th.cat([observations, actions_pi], dim=1))
            actor_loss = (ent_coef * log_prob - q_pi).mean()
            grad_action = th.zeros_like(actions_pi)
            for index, (layers, critic_pass) in enumerate(zip(self.critics, passes)):
                grad_q = th.full_like(q_pi, -1.0 / n) if chosen is None else (chosen == index) * (-1.0 / n)
                grad_input = mlp_backward(grad_q, layers, critic_pass.inputs)
                assert grad_input is not None
                grad_action += grad_input[:, observations.shape[1] :]
            actor_grads = self._actor_backward(actor, n, grad_action, ent_coef / n)
            ent_coef_loss_grad = -(log_prob + target_entropy).mean()
            logged = th.stack([ent_coef.reshape(()), actor_loss, critic_loss, ent_coef_loss_grad])
        return actor_grads, critic_grads, logged

    def _actor_backward(
        self, actor: ActorPass, n: int, grad_action: th.Tensor, grad_log_prob: th.Tensor
    ) -> list[th.Tensor]:
        """Gradients of the actor's parameters (hidden layers, mu, log_std) from d loss / d action and
        d loss / d log-prob of the first `n` rows (the reparameterised sample, as SB3's rsample)."""
        action = actor.action[:n]
        one_minus = actor.one_minus_action_squared[:n]
        grad_action = grad_action + grad_log_prob * 2 * action / (one_minus + _SQUASH_EPSILON)
        grad_pre_tanh = grad_action * one_minus
        grad_log_std = (grad_pre_tanh * actor.std[:n] * actor.noise[:n] - grad_log_prob) * actor.log_std_unclamped[:n]
        latent = actor.hidden.output[:n]
        head_grads = [
            grad_pre_tanh.t() @ latent,
            grad_pre_tanh.sum(dim=0),
            grad_log_std.t() @ latent,
            grad_log_std.sum(dim=0),
        ]
        grad_latent = grad_pre_tanh @ self.actor_mu[0] + grad_log_std @ self.actor_log_std[0]
        if self.actor_hidden:
            grad_latent = grad_latent.mul_(latent.sign())
        hidden_grads: list[th.Tensor] = []
        mlp_backward(grad_latent, self.actor_hidden, [x[:n] for x in actor.hidden.inputs], hidden_grads)
        return hidden_grads + head_grads

    def actor_parameters(self) -> list[th.Tensor]:
        """The actor's parameters in the order :meth:`gradients` returns their gradients."""
        return [p for layer in [*self.actor_hidden, self.actor_mu, self.actor_log_std] for p in layer]

    def critic_parameters(self) -> list[th.Tensor]:
        """The critics' parameters in the order :meth:`gradients` returns their gradients."""
        return [p for layers in self.critics for layer in layers for p in layer]

    def critic_target_parameters(self) -> list[th.Tensor]:
        """The target critics' parameters, paired with :meth:`critic_parameters`."""
        return [p for layers in self.critic_targets for layer in layers for p in layer]


def output_clamp(module: nn.Module) -> tuple[float, float] | None:
    """(low, high) of an nn.Hardtanh that ends a Sequential (a clamp of the network's output), else None."""
    if isinstance(module, nn.Sequential) and len(module) > 0 and isinstance(module[-1], nn.Hardtanh):
        return float(module[-1].min_val), float(module[-1].max_val)
    return None


def lean_networks(model: SAC) -> LeanNetworks | None:
    """LeanNetworks for a plain-MLP SAC policy on Box (or Dict of Box) observations; None for anything else.

    Covered: flatten/combined extractors without images, Linear+ReLU networks, no gSDE, no batch norm, and
    target critics that all end in the same output clamp (an nn.Hardtanh, as HAC's Q bound). Everything else
    keeps SB3's own code path.
    """
    policy = model.policy
    actor, critic, target = policy.actor, policy.critic, policy.critic_target
    space = model.observation_space
    if model.use_sde or any(isinstance(m, nn.BatchNorm1d) for m in policy.modules()):
        return None
    if isinstance(space, spaces.Dict):
        if not all(isinstance(s, spaces.Box) and not is_image_space(s) for s in space.spaces.values()):
            return None
        extractors_ok = all(
            isinstance(e, CombinedExtractor) and all(isinstance(x, nn.Flatten) for x in e.extractors.values())
            for e in (actor.features_extractor, critic.features_extractor)
        )
        keys: tuple[str, ...] | None = tuple(space.spaces)
    elif isinstance(space, spaces.Box) and not is_image_space(space):
        extractors_ok = all(
            isinstance(e, FlattenExtractor) for e in (actor.features_extractor, critic.features_extractor)
        )
        keys = None
    else:
        return None
    hidden = linear_layers(actor.latent_pi)
    mu, log_std = linear_layers(actor.mu), linear_layers(actor.log_std)
    critics = [linear_layers(q) for q in critic.q_networks]
    target_clamps = {output_clamp(q) for q in target.q_networks}
    target_q_range = target_clamps.pop() if len(target_clamps) == 1 else None
    targets = [linear_layers(q[:-1] if target_q_range else q) for q in target.q_networks]
    if target_clamps or not extractors_ok or hidden is None or not mu or not log_std or None in critics + targets:
        return None
    return LeanNetworks(keys, hidden, mu[0], log_std[0], critics, targets, target_q_range)  # type: ignore[arg-type]
