"""The keys of the app's (task's) config that the sweep reads, read in one place, once per sweep.

The sweeper knows nothing else of the app's config: everything else reaches the trials as Hydra overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from util.errors import ConfigError

BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@dataclass(frozen=True)
class TaskKeys:
    """What the sweep reads from the composed multirun config.

    :param env: `env`, for the default study name and the sweep's MLflow tags.
    :param algorithm: `algorithm.name`, likewise.
    :param n_epochs: `n_epochs`: a trial's epoch budget before the learned cap (also hyperband's max resource).
    :param seed: `seed`: the first seed of a trial's seeds.
    :param metric: `early_stop_data_column`: what a trial reports to the pruner every epoch.
    :param tracking_uri: `mlflow.tracking_uri` (null = MLflow's default).
    :param experiment_name: `mlflow.experiment_name`.
    :param search_space: The config's search space entries (key -> Hydra override expression), unresolved.
    :param search_space_key: Where those entries are written, to name them in errors: `search_space`, or
        `algorithm.search_space` when the top-level key still points at the algorithm's default space.
    :param sweep_dir: `hydra.sweep.dir`, resolved once (its `${now:...}` must not change between trials).
    :param launcher: `hydra.launcher._target_`.
    """

    env: str | None
    algorithm: str | None
    n_epochs: int
    seed: int
    metric: str
    tracking_uri: str | None
    experiment_name: str
    search_space: Mapping[str, Any] = field(default_factory=dict)
    search_space_key: str = "search_space"
    sweep_dir: Path = Path(".")
    launcher: str | None = None

    @classmethod
    def from_config(cls, config: DictConfig) -> TaskKeys:
        """Read the keys; ConfigError if `search_space` is not a mapping."""
        env = config.get("env")
        algorithm = OmegaConf.select(config, "algorithm.name")
        entries, where = search_space_entries(config)
        return cls(
            env=None if env is None else str(env),
            algorithm=None if algorithm is None else str(algorithm),
            n_epochs=int(config.get("n_epochs", 1)),
            seed=int(config.get("seed", 0)),
            metric=str(config.get("early_stop_data_column", "test/success_rate")),
            tracking_uri=OmegaConf.select(config, "mlflow.tracking_uri"),
            experiment_name=str(OmegaConf.select(config, "mlflow.experiment_name", default="sweeps")),
            search_space=entries,
            search_space_key=where,
            sweep_dir=Path(str(config.hydra.sweep.dir)).resolve(),
            launcher=OmegaConf.select(config, "hydra.launcher._target_"),
        )

    @property
    def default_study_name(self) -> str:
        """`<env>_<algorithm name>`, the study name when `hydra.sweeper.study_name` is null."""
        return f"{self.env or 'app'}_{self.algorithm or 'run'}"

    @property
    def uses_basic_launcher(self) -> bool:
        """Whether trials run as our own local processes (Hydra's basic launcher is configured)."""
        return self.launcher == BASIC_LAUNCHER


def search_space_entries(config: DictConfig) -> tuple[dict[str, Any], str]:
    """The config's search space entries (key -> override expression) and where they are written.

    conf/main.yaml sets `search_space: ${oc.select:algorithm.search_space,{}}`: the algorithm's default space
    (named `algorithm.search_space` in errors) until the user sets `search_space` on the command line or in a
    preset; `~search_space` or `search_space={}` leaves no config space at all.
    """
    if "search_space" not in config:
        return {}, "search_space"
    where = "algorithm.search_space" if OmegaConf.is_interpolation(config, "search_space") else "search_space"
    node = config.get("search_space")
    if node is None:
        return {}, where
    if isinstance(node, DictConfig):
        entries = OmegaConf.to_container(node, resolve=False)
    elif isinstance(node, Mapping):
        entries = dict(node)
    else:
        raise ConfigError(where, f"must be a mapping of key -> override expression, got {node!r}")
    assert isinstance(entries, dict)
    return {str(key): value for key, value in entries.items()}, where
