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


def _preset_algorithm(preset: dict) -> str | None:
    """The algorithm a preset picks with `defaults: [override /algorithm: <name>]`, itself or through another
    preset it builds on (`defaults: [<preset>, _self_]`), if it picks one."""
    for entry in preset.get("defaults", []):
        if isinstance(entry, dict) and "override /algorithm" in entry:
            return str(entry["override /algorithm"])
        if isinstance(entry, str) and entry != "_self_":
            parent = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "tuned" / f"{entry}.yaml"))
            assert isinstance(parent, dict)
            return _preset_algorithm(parent)
    return None


@pytest.mark.parametrize("name", TUNED)
def test_tuned_preset_sets_only_known_keys_and_its_env(name: str, make_cfg: Callable[..., DictConfig]) -> None:
    """A typo in a preset (say `algorithm.learner.gama`) would add a key nothing reads; every key must exist in
    the base config of the algorithm the preset picks (`env_kwargs` are the env's own, passed to gymnasium.make)."""
    preset = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "tuned" / f"{name}.yaml"))
    assert isinstance(preset, dict)
    algorithm = _preset_algorithm(preset)
    base = make_cfg(*([f"algorithm={algorithm}"] if algorithm else []))
    tuned = make_cfg(f"+tuned={name}")
    settings = {key: value for key, value in preset.items() if key != "defaults"}
    for key in _leaf_keys(settings):
        if not key.startswith("env_kwargs."):
            assert OmegaConf.select(base, key, default="<missing>") != "<missing>", (
                f"{name}.yaml sets unknown key {key}"
            )
        assert OmegaConf.select(tuned, key) == OmegaConf.select(OmegaConf.create(settings), key), key
    # `<env id>` is the env's preset, `<env id>-<algorithm>` another algorithm's on the same env.
    assert name == tuned.env or name == f"{tuned.env}-{tuned.algorithm.name}"
    assert tuned.algorithm.name == (algorithm or base.algorithm.name)


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


def test_point_maze_preset_is_the_measured_hac(make_cfg: Callable[..., DictConfig]) -> None:
    """The preset switches the algorithm to HAC with both extensions; the command line still wins."""
    cfg = make_cfg("+tuned=PointMaze_Medium-v3", "algorithm.subgoal_radius=2.0")
    assert cfg.algorithm.name == "hac" and list(cfg.algorithm.time_scales) == [30, -1]
    assert cfg.algorithm.dense_hindsight is True and cfg.algorithm.subgoal_radius == 2.0
    assert cfg.env_kwargs.continuing_task is False
    assert cfg.n_epochs * cfg.eval_after_n_steps == 40_000


def test_point_maze_preset_trains(make_cfg: Callable[..., DictConfig]) -> None:
    """Two tiny epochs of the preset's hierarchy on the maze: relative subgoals and dense hindsight run end to end."""
    cfg = make_cfg(
        "+tuned=PointMaze_Medium-v3",
        *TINY,
        "n_test_rollouts=1",
        "algorithm.learner.learning_starts=100",
        "algorithm.learner.batch_size=32",
    )
    score = train(cfg)
    assert 0.0 <= score <= 2.0
