"""conf/tuned/: per-env presets selected with `+tuned=<env id>` that only change keys the base config has."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from omegaconf import DictConfig, OmegaConf

from experiment.train import train
from tests.conftest import CONF_DIR, TINY

TUNED = sorted(path.stem for path in (CONF_DIR / "tuned").glob("*.yaml"))


def _leaf_keys(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [key for name, value in node.items() for key in _leaf_keys(value, f"{prefix}{name}.")]
    return [prefix.rstrip(".")]


@pytest.mark.parametrize("name", TUNED)
def test_tuned_preset_sets_only_known_keys_and_its_env(name: str, make_cfg: Callable[..., DictConfig]) -> None:
    """A typo in a preset (say `algorithm.learner.gama`) would add a key nothing reads; every key must exist."""
    base = make_cfg()
    tuned = make_cfg(f"+tuned={name}")
    preset = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "tuned" / f"{name}.yaml"))
    for key in _leaf_keys(preset):
        assert OmegaConf.select(base, key, default="<missing>") != "<missing>", f"{name}.yaml sets unknown key {key}"
        assert OmegaConf.select(tuned, key) == OmegaConf.select(OmegaConf.create(preset), key), key
    assert tuned.env == name


def test_ant_reacher_preset_values_and_command_line_wins(make_cfg: Callable[..., DictConfig]) -> None:
    """The measured AntReacher settings reach the SAC learner; an explicit override still beats the preset."""
    cfg = make_cfg("+tuned=AntReacher-v1", "algorithm.learner.tau=0.02")
    assert cfg.algorithm.name == "her" and cfg.algorithm.model_class == "sac"
    assert cfg.algorithm.learner.gamma == 0.99 and cfg.algorithm.learner.buffer_size >= 150_000
    assert list(cfg.algorithm.per_model_class.sac.policy_kwargs.net_arch) == [256, 256]
    assert cfg.algorithm.learner.tau == 0.02
    assert cfg.n_epochs * cfg.eval_after_n_steps == 150_000


@pytest.mark.slow
def test_ant_reacher_preset_trains(make_cfg: Callable[..., DictConfig]) -> None:
    """Two tiny epochs with the preset's networks and warm-up shortened: the run finishes and reports a score."""
    cfg = make_cfg(
        "+tuned=AntReacher-v1",
        *TINY,
        "algorithm.learner.learning_starts=100",
        "n_test_rollouts=1",
        "env_subprocess=false",
    )
    score = train(cfg)
    assert 0.0 <= score <= 2.0
