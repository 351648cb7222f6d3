"""Checks of `hydra.sweeper` and of the search space before anything is written: a bad value is one ConfigError.

What passes is a :class:`SweepPlan`, the one object the study, the trial loop and the records are built from.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ideas_optuna_sweeper._search_space import SearchSpace, parse_search_space
from hydra_plugins.ideas_optuna_sweeper._task import TaskKeys
from hydra_plugins.ideas_optuna_sweeper.config import DIRECTIONS, SAMPLERS, IdeasOptunaSweeperConf
from util.errors import ConfigError
from util.trial_reporting import PRUNERS, make_pruner

# The median pruner prunes once this many trials finished (optuna's default is 5, a quarter of a 20-trial sweep
# spent unpruned). A trial that stopped on success holds its value (see TrialScheduler.tell), so even one
# finished trial is a full reference curve. README "Hyperparameter sweeps" has the measurement behind the number.
MEDIAN_STARTUP_TRIALS = 1


@dataclass(frozen=True)
class SweepPlan:
    """A checked sweep: what to run (settings, task keys, search space) and the pruner's arguments.

    :param settings: `hydra.sweeper`.
    :param task: The keys the sweep reads from the task's config.
    :param space: The search space of the config and the command line.
    :param pruner_kwargs: The pruner's constructor arguments with our defaults filled in (a trial's process
        builds the same pruner from them).
    """

    settings: IdeasOptunaSweeperConf
    task: TaskKeys
    space: SearchSpace
    pruner_kwargs: dict[str, Any]


def plan_sweep(
    settings: IdeasOptunaSweeperConf, config: DictConfig, arguments: Sequence[str], hydra_context: HydraContext
) -> SweepPlan:
    """Read the task's keys and check settings and search space; ConfigError names the first bad key."""
    task = TaskKeys.from_config(config)
    pruner_kwargs = validate_settings(settings, task.n_epochs)
    space = validate_space(task, arguments, settings.sampler, hydra_context, config)
    return SweepPlan(settings, task, space, pruner_kwargs)


def validate_settings(settings: IdeasOptunaSweeperConf, n_epochs: int) -> dict[str, Any]:
    """Check `hydra.sweeper`; return the pruner's constructor arguments with our defaults filled in.

    :param settings: `hydra.sweeper`.
    :param n_epochs: The task's `n_epochs` (the hyperband pruner's default `max_resource`).
    """
    s = settings
    for key in ("n_trials", "n_jobs", "n_seeds_per_trial"):
        if not isinstance(getattr(s, key), int) or getattr(s, key) < 1:
            raise ConfigError(f"hydra.sweeper.{key}", f"must be an integer >= 1, got {getattr(s, key)!r}")
    if s.sampler not in SAMPLERS:
        raise ConfigError("hydra.sweeper.sampler", f"unknown sampler {s.sampler!r}", SAMPLERS)
    if s.sampler == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise ConfigError("hydra.sweeper.sampler", "cmaes needs the `cmaes` package (pip install cmaes)")
    if s.pruner not in PRUNERS:
        raise ConfigError("hydra.sweeper.pruner", f"unknown pruner {s.pruner!r}", PRUNERS)
    if s.direction not in DIRECTIONS:
        raise ConfigError("hydra.sweeper.direction", f"unknown direction {s.direction!r}", DIRECTIONS)
    if not 0.0 <= s.max_failure_rate <= 1.0:
        raise ConfigError("hydra.sweeper.max_failure_rate", f"must be in [0, 1], got {s.max_failure_rate}")
    if s.max_duration_minutes is not None and s.max_duration_minutes <= 0:
        raise ConfigError("hydra.sweeper.max_duration_minutes", "must be > 0 (or null for no limit)")
    for key in ("heartbeat_interval", "grace_period"):
        value = getattr(s, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"hydra.sweeper.{key}", f"must be an integer >= 1 (seconds) or null, got {value!r}")
    if s.storage is not None:
        try:
            sqlalchemy.engine.make_url(s.storage).get_dialect().import_dbapi()
        except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as error:
            raise ConfigError(
                "hydra.sweeper.storage",
                f"cannot use this URL ({type(error).__name__}: {error})",
                ["sqlite:///<file>", "postgresql+psycopg://<user>@<host>:<port>/<db> (extra: .[cluster])"],
            ) from None
    if not isinstance(s.max_retry, int) or s.max_retry < 0:
        raise ConfigError("hydra.sweeper.max_retry", f"must be an integer >= 0, got {s.max_retry!r}")
    if s.early_stop_factor <= 0:
        raise ConfigError("hydra.sweeper.early_stop_factor", f"must be > 0, got {s.early_stop_factor}")
    pruner_kwargs = OmegaConf.to_container(OmegaConf.create(s.pruner_kwargs))
    assert isinstance(pruner_kwargs, dict)
    if s.pruner == "hyperband":
        pruner_kwargs.setdefault("max_resource", n_epochs)
    if s.pruner == "median":
        pruner_kwargs.setdefault("n_startup_trials", MEDIAN_STARTUP_TRIALS)
    try:
        make_pruner(s.pruner, pruner_kwargs)
    except (TypeError, ValueError) as error:
        raise ConfigError("hydra.sweeper.pruner_kwargs", f"rejected by the {s.pruner} pruner: {error}") from None
    return {str(key): value for key, value in pruner_kwargs.items()}


def validate_space(
    task: TaskKeys, arguments: Sequence[str], sampler: str, hydra_context: HydraContext, config: DictConfig
) -> SearchSpace:
    """The search space of the config and the command line, each key checked against the config.

    :param task: The task's keys (its config's search space entries among them).
    :param arguments: The command line's overrides (sweeps among them join the space).
    :param sampler: `hydra.sweeper.sampler` (grid needs discrete entries only).
    :param hydra_context: Composes a job's config, to try each key with a value from its distribution.
    :param config: The multirun config the jobs are composed from.
    """
    entries = task.search_space
    space = parse_search_space(entries, arguments, task.search_space_key)
    for key, distribution in space.distributions.items():
        try:
            hydra_context.config_loader.load_sweep_config(config, space.overrides({key: _representative(distribution)}))
        except Exception as error:  # Hydra's composition errors name the key in a long message
            where = f"{task.search_space_key}.{key}" if key in entries else key
            raise ConfigError(where, str(error).strip().splitlines()[0]) from None
    if sampler == "grid":
        space.grid(task.search_space_key)
    return space


def _representative(distribution: optuna.distributions.BaseDistribution) -> Any:
    """A value inside the distribution, to check before the sweep that the config accepts the key."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low  # type: ignore[attr-defined]
