"""Checks of the composed config that need no env or learner, so bad values fail before anything runs."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from interface.envs import START_AIDS
from util.errors import ConfigError
from util.mlflow_logger import check_tracking_server
from util.video import check_render_test

RENDER_MODES = ("none", "record", "display")
DEVICES = ("auto", "cpu", "cuda")
COMET_MODES = ("auto", "online", "offline", "off")
EARLY_STOP_COLUMNS = (
    "test/success_rate",
    "test/mean_reward",
    "test/ep_length",
    "train/success_rate",
    "train/mean_reward",
    "train/ep_length",
)


def _integer_at_least(cfg: DictConfig, key: str, minimum: int) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")


def _one_of(value: object, key: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, f"unknown value {value!r}", allowed)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value cannot work."""
    for key in (
        "n_epochs",
        "eval_after_n_steps",
        "n_test_rollouts",
        "early_stop_last_n",
        "render_freq",
        "torch_threads",
    ):
        _integer_at_least(cfg, key, 1)
    _integer_at_least(cfg, "save_model_freq", 0)
    _integer_at_least(cfg, "seed", 0)
    _one_of(cfg.render_test, "render_test", RENDER_MODES)
    _one_of(cfg.device, "device", DEVICES)
    _one_of(cfg.comet.mode, "comet.mode", COMET_MODES)
    _one_of(cfg.early_stop_data_column, "early_stop_data_column", EARLY_STOP_COLUMNS)
    floor = cfg.algorithm.get("obs_std_floor", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or floor < 0:
        raise ConfigError("algorithm.obs_std_floor", f"must be a number >= 0, got {floor!r}")
    for key in START_AIDS:
        prob = cfg[key]
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0 <= prob <= 1:
            raise ConfigError(key, f"must be a number in [0, 1], got {prob!r}")
    shared = cfg.algorithm.get("shared_goal_statistics", False)
    if not isinstance(shared, bool):
        raise ConfigError("algorithm.shared_goal_statistics", f"unknown value {shared!r}", ["true", "false"])
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda requested but torch sees no GPU", ["auto", "cpu"])
    if not (cfg.env_subprocess == "auto" or isinstance(cfg.env_subprocess, bool)):
        raise ConfigError("env_subprocess", f"unknown value {cfg.env_subprocess!r}", ["auto", "true", "false"])
    check_render_test(cfg.render_test)
    check_tracking_server(cfg.mlflow.tracking_uri)
