"""Algorithm registry: how each `algorithm=<name>` config group becomes an SB3-style model for an env."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from ideas_baselines.her import HindsightReplayBuffer
from interface.algorithm_spec import AlgorithmSpec
from interface.envs import check_goal_env, goal_functions
from interface.hac import HAC_SPEC
from interface.learner_config import her_buffer_kwargs, learner_kwargs
from interface.learners import HER_MODEL_CLASSES, LEARNERS
from util.errors import ConfigError


def _check_action_space(learner: str, env: VecEnv, key: str, candidates: tuple[str, ...]) -> None:
    """ConfigError naming the `candidates` that could act in the env when `learner` cannot."""
    accepted = LEARNERS[learner].action_spaces
    if not isinstance(env.action_space, accepted):
        kinds = " or ".join(kind.__name__ for kind in accepted)
        fitting = [name for name in candidates if isinstance(env.action_space, LEARNERS[name].action_spaces)]
        raise ConfigError(key, f"{learner} needs a {kinds} action space, the env has {env.action_space}", fitting)


def _construct(learner: str, kwargs: dict[str, Any], env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    try:
        return LEARNERS[learner].cls(env=env, seed=seed, device=device, verbose=0, **kwargs)
    except TypeError as error:
        raise ConfigError("algorithm.learner", f"{learner} rejected its settings: {error}") from None


def _build_plain(name: str) -> Callable[[DictConfig, VecEnv, int, str], BaseAlgorithm]:
    def build(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
        _check_action_space(name, env, "algorithm", tuple(LEARNERS))
        kwargs = learner_kwargs(algorithm_cfg, name, env.action_space, env.observation_space)
        return _construct(name, kwargs, env, seed, device)

    return build


def _her_model_class(algorithm_cfg: DictConfig) -> str:
    model_class = algorithm_cfg.get("model_class")
    if model_class not in HER_MODEL_CLASSES:
        raise ConfigError("algorithm.model_class", f"unknown value {model_class!r}", HER_MODEL_CLASSES)
    return str(model_class)


def _build_her(algorithm_cfg: DictConfig, env: VecEnv, seed: int, device: str) -> BaseAlgorithm:
    learner = _her_model_class(algorithm_cfg)
    buffer_kwargs = her_buffer_kwargs(algorithm_cfg)
    check_goal_env(env, "env", "algorithm=her")
    _check_action_space(learner, env, "algorithm.model_class", HER_MODEL_CLASSES)
    kwargs = learner_kwargs(algorithm_cfg, learner, env.action_space, env.observation_space)
    kwargs["replay_buffer_class"] = HindsightReplayBuffer
    kwargs["replay_buffer_kwargs"] = buffer_kwargs
    model = _construct(learner, kwargs, env, seed, device)
    _attach_her(model, env)
    return model


def _attach_her(model: BaseAlgorithm, env: VecEnv) -> None:
    """Link the HER buffer to the env's goal functions; a restored buffer loses its unfinished episode."""
    buffer = model.replay_buffer  # type: ignore[attr-defined]
    assert isinstance(buffer, HindsightReplayBuffer)
    buffer.attach_goal_functions(*goal_functions(env))
    buffer.truncate_last_trajectory()


ALGORITHMS: dict[str, AlgorithmSpec] = {
    "her": AlgorithmSpec("her", lambda cfg: LEARNERS[_her_model_class(cfg)].cls, _build_her, _attach_her),
    "hac": HAC_SPEC,
    **{name: AlgorithmSpec(name, (lambda cfg, name=name: LEARNERS[name].cls), _build_plain(name)) for name in LEARNERS},
}


def overlaps_env_step(spec: AlgorithmSpec, algorithm_cfg: DictConfig) -> bool:
    """True if the configured learner can train while its env steps in another process (see `env_subprocess`)."""
    model_class = spec.model_class(algorithm_cfg)
    return any(learner.trains_while_env_steps and learner.cls is model_class for learner in LEARNERS.values())


def get_algorithm(name: str) -> AlgorithmSpec:
    """Look up an algorithm by its config group name; ConfigError lists the known ones."""
    if name not in ALGORITHMS:
        raise ConfigError("algorithm", f"unknown algorithm {name!r}", sorted(ALGORITHMS))
    return ALGORITHMS[name]
