"""A run's envs as its config builds them, and a saved run restored from its directory.

Training (`experiment/train.py`, also when it resumes with `restore_from`) and re-testing
(`experiment/evaluate.py`) both build envs, restore observation statistics and load checkpoints here, so a re-test
cannot drift from how the run itself was built and tested.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from interface.algorithm_spec import AlgorithmSpec
from interface.algorithms import overlaps_env_step
from interface.envs import START_AIDS, make_vec_env
from util.checkpoint import Checkpoint, find_checkpoint
from util.errors import ConfigError
from util.run_info import flatten

# Env seeds of a run, as offsets from its `seed`: training uses the seed itself; the test env, the video env
# and a re-test each get their own episodes.
TEST_SEED_OFFSET = 10_000
VIDEO_SEED_OFFSET = 20_000
RETEST_SEED_OFFSET = 30_000
CONFIG_FILE = "config.yaml"
# What a resumed run may change: how long and how it goes on, and where it logs; not what or how it learns.
RESUMABLE_KEYS = frozenset(
    {
        "n_epochs",
        "n_test_rollouts",
        "early_stop_data_column",
        "early_stop_threshold",
        "early_stop_last_n",
        "render_test",
        "render_freq",
        "base_logdir",
        "save_model_freq",
        "restore_from",
        "device",
        "torch_threads",
        "env_subprocess",
        "progress_bar",
        "mlflow",
        "comet",
        "search_space",
    }
)
# Group options on the command line stand for the whole group; these keys tell which option a saved run used.
GROUP_KEYS = {"algorithm": "algorithm.name"}
# Top-level keys that runs saved before them lack, with the value that reproduces how those runs trained.
PREDATED_KEYS = {"grasped_start_prob": 0.0, "scripted_start_prob": 0.0}


def load_run_config(run_dir: Path, key: str = "run_dir") -> DictConfig:
    """The resolved config a run saved in `<run_dir>/config.yaml` (keys it predates filled in from PREDATED_KEYS);
    ConfigError under `key` if there is none."""
    if not run_dir.is_dir():
        raise ConfigError(key, f"no such directory: {run_dir}")
    config = run_dir / CONFIG_FILE
    if not config.is_file():
        raise ConfigError(key, f"{run_dir} has no {CONFIG_FILE} (not a run directory of experiment/train.py)")
    cfg = OmegaConf.load(config)
    assert isinstance(cfg, DictConfig)
    for name, value in PREDATED_KEYS.items():
        cfg.setdefault(name, value)
    return cfg


def resume_config(current: DictConfig, overrides: Sequence[str] | None) -> DictConfig:
    """The config of the run that `current.restore_from` names, with the command line's resumable keys on top.

    A resumed run goes on as it was configured: env, algorithm and every learner setting, seed and epoch length
    come from its saved config, whatever today's defaults are. Of the keys that `overrides` (the command line's
    Hydra overrides) name, those in RESUMABLE_KEYS are taken from `current` (e.g. a larger `n_epochs`); any
    other one that differs from the saved value raises ConfigError: that would be a different run. Without
    `overrides` (a config composed by a caller in-process) every resumable key is taken from `current`.
    """
    saved = load_run_config(Path(current.restore_from), "restore_from")
    resumed = saved.copy()
    resumed.restore_from = current.restore_from
    keys = sorted(RESUMABLE_KEYS & set(current.keys())) if overrides is None else _override_keys(overrides)
    for key in keys:
        if key.split(".")[0] in RESUMABLE_KEYS:
            OmegaConf.update(resumed, key, OmegaConf.select(current, key), merge=False)
            continue
        compared = [GROUP_KEYS.get(key, key)] if key != "tuned" else _fixed_leaves(current)
        for leaf in compared:
            wanted, kept = OmegaConf.select(current, leaf), OmegaConf.select(saved, leaf)
            if _plain(wanted) != _plain(kept):
                raise ConfigError(
                    leaf,
                    f"{_plain(wanted)!r} conflicts with the run being resumed ({_plain(kept)!r}); restore_from goes "
                    f"on with that run's own config: leave {key} out, or start a new run",
                )
    return resumed


def _override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys (or groups) that Hydra override strings set, without Hydra's own `hydra.*`."""
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if not o.startswith("hydra")])
    return [o.key_or_group for o in parsed if not o.is_hydra_override()]


def _fixed_leaves(cfg: DictConfig) -> list[str]:
    """Every dotted leaf key of `cfg` outside RESUMABLE_KEYS (what a preset may set that a resume must keep)."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    return [key for key in flat if key.split(".")[0] not in RESUMABLE_KEYS]


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def require_checkpoint(run_dir: Path, key: str = "run_dir") -> Checkpoint:
    """The run's complete checkpoint; ConfigError under `key` if it has none."""
    checkpoint = find_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(key, f"no complete checkpoint/ in run directory {run_dir}")
    return checkpoint


def uses_env_subprocess(cfg: DictConfig, spec: AlgorithmSpec) -> bool:
    """`env_subprocess`: auto = when the learner can train while the env steps and a second core exists."""
    if cfg.env_subprocess == "auto":
        return overlaps_env_step(spec, cfg.algorithm) and len(os.sched_getaffinity(0)) >= 2
    return bool(cfg.env_subprocess)


def make_run_env(cfg: DictConfig, env_id: str, seed: int, subprocess: bool = False, training: bool = False) -> VecEnv:
    """One vectorised env of a run as its config asks: `env_kwargs`, and observation normalisation if the
    algorithm's `normalize_obs` is on (with its `obs_std_floor` and `shared_goal_statistics`, absent from runs
    saved before those keys existed): the training env, the test env and experiment/evaluate.py's env.
    Only a `training` env has start aids (`grasped_start_prob`, `scripted_start_prob`): tests start where the
    task starts."""
    algorithm = cfg.algorithm
    return make_vec_env(
        env_id,
        OmegaConf.to_container(cfg.env_kwargs, resolve=True),  # type: ignore[arg-type]
        seed,
        normalize_obs=bool(algorithm.get("normalize_obs", False)),
        subprocess=subprocess,
        obs_std_floor=float(algorithm.get("obs_std_floor", 0.0)),
        shared_goal_statistics=bool(algorithm.get("shared_goal_statistics", False)),
        start_probs={key: float(cfg[key]) for key in START_AIDS} if training else None,
    )


def restore_normalization(env: VecEnv, checkpoint: Checkpoint, required: bool) -> VecEnv:
    """`env` with the checkpoint's observation statistics if it normalises observations.

    A run that normalises saves the statistics with every checkpoint; `required` makes their absence an error
    (a re-test would otherwise act on unnormalised inputs), else the env keeps fresh statistics.
    """
    if not isinstance(env, VecNormalize):
        return env
    if not checkpoint.normalization.exists():
        if required:
            raise ConfigError("run_dir", f"{checkpoint.normalization} is missing (the run normalised observations)")
        return env
    return VecNormalize.load(str(checkpoint.normalization), env.venv)


def load_model(
    cfg: DictConfig,
    spec: AlgorithmSpec,
    checkpoint: Checkpoint,
    env: VecEnv,
    with_replay_buffer: bool,
    key: str = "run_dir",
) -> Any:
    """The checkpoint's model bound to `env`, with its replay buffer when training resumes.

    A checkpoint that does not load (a damaged file, another algorithm's model) is bad input: ConfigError
    under `key`, the config key that named the run directory.
    """
    buffer = checkpoint.replay_buffer if with_replay_buffer else None
    try:
        return spec.load(cfg.algorithm, checkpoint.model, env, str(cfg.get("device", "auto")), buffer)
    except ConfigError:
        raise
    except Exception as error:  # whatever unpickling or unzipping a damaged file raises
        raise ConfigError(
            key, f"the checkpoint in {checkpoint.folder} does not load ({type(error).__name__}: {error})"
        ) from None
