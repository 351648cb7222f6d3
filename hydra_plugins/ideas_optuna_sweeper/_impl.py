"""The sweep: an optuna study whose trials run asynchronously, each in a fresh process, until a stop condition.

Parent process (:class:`OptunaSweep`): reads the task's keys (`_task`), checks the settings and the search
space (`_validation`), opens (or joins, or resumes) the study (`_study`), starts the records (`_records`), then
keeps up to `n_jobs` trials busy (`_scheduling`): as soon as one ends, its result is told to the study and the
next trial starts. A trial runs one Hydra job per seed with the task function, in a fresh local process by
default or through the configured Hydra launcher (e.g. submitit on SLURM), see `_trials`; the job reports
per-epoch values to the study through `util.trial_reporting` and may be pruned. A trial that raises, returns
NaN or whose process dies is told FAIL with the reason; the sweep goes on. Several sweeps (workers, on one
machine or many) may share one study: see `_shared_study`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ideas_optuna_sweeper._records import SweepRecords
from hydra_plugins.ideas_optuna_sweeper._scheduling import SweepParts, TrialScheduler
from hydra_plugins.ideas_optuna_sweeper._study import SweepStudy
from hydra_plugins.ideas_optuna_sweeper._validation import plan_sweep
from hydra_plugins.ideas_optuna_sweeper.config import IdeasOptunaSweeperConf
from util.errors import ConfigError

log = logging.getLogger(__name__)


class OptunaSweep:
    """One sweep: validation, the study, the asynchronous trial loop and the records.

    :param settings: `hydra.sweeper` (see :class:`IdeasOptunaSweeperConf`).
    :param hydra_context: Hydra's context, used to compose each job's config.
    :param task_function: The app's task (train.py's `main`), run inside each trial's process.
    :param config: The composed multirun config (app config plus `hydra`).
    """

    def __init__(
        self,
        settings: IdeasOptunaSweeperConf,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        self.settings = settings
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, arguments: list[str]) -> None:
        """Validate (exit 2 with one line on bad input), then run trials until a stop condition holds."""
        try:
            plan = plan_sweep(self.settings, self.config, arguments, self.hydra_context)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        plan.task.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, plan.task.sweep_dir / "multirun.yaml")
        study = SweepStudy(plan)
        launcher: Launcher | None = None
        if not plan.task.uses_basic_launcher:
            launcher = Plugins.instance().instantiate_launcher(
                hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
            )
        records = SweepRecords(plan, study, self.worker)
        study.on_stale_trial = records.close_stale_trial_run
        parts = SweepParts(self.hydra_context, self.task_function, self.config, launcher, study, records)
        scheduler = TrialScheduler(plan, parts, self.worker)
        log.info(
            "study %s in %s: %d trials finished before, up to %d in all, %d at once on %s (worker %s); stop: delete %s",
            study.name,
            study.shown_url,
            study.finished_before,
            study.limit,
            self.settings.n_jobs,
            type(launcher).__name__ if launcher else "local processes",
            self.worker,
            scheduler.stop_file,
        )
        status = scheduler.run()
        broken = scheduler.failure_rate_exceeded()
        records.finish("FAILED" if broken else status, scheduler.stop_reason, scheduler.tally)
        if status == "KILLED":
            sys.exit(130)
        if broken:
            print(f"error: {scheduler.stop_reason}", file=sys.stderr)
            sys.exit(1)
