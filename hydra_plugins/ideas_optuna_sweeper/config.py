"""The sweeper's config, registered as `hydra/sweeper: ideas_optuna` (PyPI's plugin is `optuna`; no clash)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

SAMPLERS = ("tpe", "random", "cmaes", "grid")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class IdeasOptunaSweeperConf:
    """`hydra.sweeper.*`: what a sweep explores, how it runs trials and when it stops.

    The search space is the top-level `search_space` of the app's config (Hydra override syntax; by default
    the chosen algorithm's `algorithm.search_space`), plus any sweep overrides (`key=choice(...)`, `interval`,
    `range`) given on the command line.
    """

    _target_: str = "hydra_plugins.ideas_optuna_sweeper.ideas_optuna_sweeper.IdeasOptunaSweeper"
    # Total trials of the study, counting finished trials of a resumed study.
    n_trials: int = 20
    # Trials running at once, each in its own process; a new one starts as soon as any ends.
    n_jobs: int = 2
    # tpe | random | cmaes (needs the `cmaes` package) | grid (choice/range entries only).
    sampler: str = "tpe"
    # Seed of the sampler (null = random).
    seed: int | None = None
    # median | hyperband | none; pruner_kwargs go to the optuna pruner's constructor (our defaults: median
    # n_startup_trials=1, hyperband max_resource=n_epochs).
    pruner: str = "median"
    pruner_kwargs: dict[str, Any] = field(default_factory=dict)
    # maximize | minimize (`hyperopt/score` is maximised).
    direction: str = "maximize"
    # Any optuna storage URL; null = sqlite file `optuna.db` in the sweep dir.
    storage: str | None = None
    # Same name and storage = resume that study; null = `<env>_<algorithm>`.
    study_name: str | None = None
    # Start no new trial after this many minutes (running ones finish); null = no limit.
    max_duration_minutes: float | None = None
    # Seeds (seed, seed+1, ...) per parameter set; the trial's value is their mean.
    n_seeds_per_trial: int = 1
    # End the sweep when more than this fraction of its finished trials failed (checked from 5 trials on).
    max_failure_rate: float = 0.5
    # Cap trials at early_stop_factor x the epochs of the fastest trial that early-stopped on success: new
    # trials get that n_epochs, running ones end after their first epoch at or past the cap.
    learned_early_stop: bool = True
    early_stop_factor: float = 1.5
    # Seconds between heartbeats of each running trial (several workers may share the study); null = none.
    # A trial without a heartbeat for grace_period seconds (null = 2 x heartbeat_interval) is marked FAIL by
    # any worker of the study, and its params are enqueued again up to max_retry times.
    heartbeat_interval: int | None = 60
    grace_period: int | None = None
    max_retry: int = 2


ConfigStore.instance().store(
    group="hydra/sweeper", name="ideas_optuna", node=IdeasOptunaSweeperConf, provider="ideas_optuna_sweeper"
)
