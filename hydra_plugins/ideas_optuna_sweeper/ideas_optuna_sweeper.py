"""The public sweeper class Hydra instantiates; all work happens in `_impl`, imported when a sweep starts."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.ideas_optuna_sweeper.config import IdeasOptunaSweeperConf


class IdeasOptunaSweeper(Sweeper):
    """Hydra sweeper running an optuna study over the app's `search_space` (see :class:`IdeasOptunaSweeperConf`).

    :param kwargs: The fields of :class:`IdeasOptunaSweeperConf` as Hydra passes them.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.settings = IdeasOptunaSweeperConf(**kwargs)
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Keep what the sweep needs to compose and run jobs."""
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    def sweep(self, arguments: list[str]) -> None:
        """Run the study; `arguments` are the command-line overrides (sweeps among them join the space)."""
        from hydra_plugins.ideas_optuna_sweeper._impl import OptunaSweep

        assert self.hydra_context is not None and self.task_function is not None and self.config is not None
        OptunaSweep(self.settings, self.hydra_context, self.task_function, self.config).run(arguments)
