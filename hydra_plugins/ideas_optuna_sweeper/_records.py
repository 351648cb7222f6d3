"""What a sweep leaves behind: `optimization_results.yaml`, optuna's plots, MLflow runs, Comet archives, the summary.

MLflow gets one parent run per sweep (worker) and a nested run per trial; the trainings of a trial are nested
under the trial's run by `_trials`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.ideas_optuna_sweeper._study import SweepStudy
from hydra_plugins.ideas_optuna_sweeper._trials import TrialOutcome, job_run_dir
from hydra_plugins.ideas_optuna_sweeper._validation import SweepPlan
from util.comet_logger import comet_api_key_configured, offline_archives, upload_offline_archive
from util.mlflow_logger import MlflowRun
from util.run_info import flatten, git_short_hash
from util.trial_reporting import EPOCH_CAP_ATTR

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"

# An MLflow run's end status for each final trial state.
_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}


@dataclass
class WorkerTally:
    """This worker's counts, for the summary and the failure rate.

    :param finished: Trials this worker told the study (any state).
    :param failed: Those of them that failed.
    :param idle_seconds: Slot time between a trial's end and the next trial's start in that slot.
    :param busy_seconds: Slot time with a trial running.
    """

    finished: int = 0
    failed: int = 0
    idle_seconds: float = 0.0
    busy_seconds: float = 0.0

    @property
    def idle_fraction(self) -> float:
        """Share of slot time spent waiting for a trial to start."""
        return round(self.idle_seconds / max(self.idle_seconds + self.busy_seconds, 1e-9), 4)


class SweepRecords:
    """The sweep's records; the sweep's MLflow run is started on construction.

    :param plan: The checked sweep: settings and search space (logged), the task's sweep dir, MLflow store and tags.
    :param study: The study the records describe.
    :param worker: `<host>:<pid>` of this sweep process.
    """

    def __init__(self, plan: SweepPlan, study: SweepStudy, worker: str) -> None:
        settings, task, space = plan.settings, plan.task, plan.space
        self.settings, self.task, self.space = settings, task, space
        self.study = study
        self.worker = worker
        self.plots_noted = False
        self.comet_key: bool | None = None  # looked up once, when the first trial leaves an archive
        self.archives_noted = False
        self.sweep_run = MlflowRun(
            task.tracking_uri,
            task.experiment_name,
            f"sweep_{study.name}",
            {
                "sweep_dir": str(task.sweep_dir),
                "study_name": study.name,
                "optuna_storage": study.shown_url,
                "sweep/worker": worker,
                "git_commit": git_short_hash(),
                "env": task.env or "",
                "algorithm": task.algorithm or "",
            },
        )
        logged = {k: v for k, v in vars(settings).items() if k != "_target_"}
        space_text = {key: repr(distribution) for key, distribution in space.distributions.items()}
        self.sweep_run.log_params(flatten({"sweeper": logged, "search_space": space_text}))

    # ----- trials -----

    def trial_run(self, trial: optuna.Trial, n_epochs: int) -> MlflowRun:
        """Start a trial's MLflow run, nested under the sweep's, with its params."""
        run = MlflowRun(
            self.task.tracking_uri,
            self.task.experiment_name,
            f"trial_{trial.number}",
            {
                "mlflow.parentRunId": self.sweep_run.run_id,
                "sweep/trial": str(trial.number),
                "sweep/study": self.study.name,
                "sweep/state": "RUNNING",
                "sweep/worker": self.worker,
            },
        )
        run.log_params({**trial.params, "n_epochs": n_epochs})
        return run

    def trial_told(self, trial: optuna.Trial, run: MlflowRun, outcome: TrialOutcome, value: float | None) -> None:
        """Close a trial's run with its state, score and env steps."""
        metrics = {"sweep/env_steps": float(outcome.env_steps)}
        if value is not None:
            metrics["hyperopt/score"] = value
        run.log_metrics(metrics, step=trial.number)
        run.set_tags({"sweep/state": outcome.state, **({"sweep/error": outcome.error} if outcome.error else {})})
        run.finish(_RUN_STATUS.get(outcome.state, "FAILED"))

    @staticmethod
    def trial_taken_over(run: MlflowRun) -> None:
        """Close the run of a trial that another worker marked FAIL meanwhile (this worker's heartbeats lapsed)."""
        run.set_tags({"sweep/state": "FAIL", "sweep/error": "marked FAIL by another worker (no heartbeat)"})
        run.finish("FAILED")

    def close_stale_trial_run(self, number: int) -> None:
        """Mark a dead worker's MLflow run of the trial FAILED, when it is in this worker's tracking store."""
        client = MlflowClient(self.task.tracking_uri)
        experiment = client.get_experiment_by_name(self.task.experiment_name)
        if experiment is None:
            return
        query = (
            f"tags.`sweep/study` = '{self.study.name}' and tags.`sweep/trial` = '{number}' "
            "and attributes.status = 'RUNNING'"
        )
        for run in client.search_runs([experiment.experiment_id], filter_string=query):
            client.set_tag(run.info.run_id, "sweep/state", "FAIL")
            client.set_tag(run.info.run_id, "sweep/error", "its worker stopped sending heartbeats")
            client.set_terminated(run.info.run_id, "FAILED")

    def send_comet_archives(self, configs: list[DictConfig]) -> None:
        """Upload a finished trial's offline Comet archives when a key exists; else say once where they are."""
        archives = [archive for config in configs for archive in offline_archives(job_run_dir(config))]
        if not archives:
            return
        if self.comet_key is None:
            self.comet_key = comet_api_key_configured()
        if self.comet_key:
            for archive in archives:
                if not upload_offline_archive(archive):
                    log.warning("Comet upload of %s failed; it stays on disk (send it later: comet upload)", archive)
        elif not self.archives_noted:
            log.info(
                "no Comet API key: each trial's Comet record stays offline in %s/<trial>/comet/*.zip; "
                "send them later with `comet upload <zip>`",
                self.task.sweep_dir,
            )
            self.archives_noted = True

    # ----- the study as a whole -----

    def summary(self, tally: WorkerTally) -> dict[str, Any]:
        """The study's state for the results file: counts per state, env steps, the best trial, idle time."""
        study = self.study.study
        trials = study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for trial in trials:
            states[trial.state.name] = states.get(trial.state.name, 0) + 1
        summary: dict[str, Any] = {
            "study_name": study.study_name,
            "storage": self.study.shown_url,
            "direction": self.settings.direction,
            "sampler": self.settings.sampler,
            "pruner": self.settings.pruner,
            "trials": states,
            "env_steps": sum(int(t.user_attrs.get("env_steps", 0)) for t in trials),
            "epoch_cap": study.user_attrs.get(EPOCH_CAP_ATTR),
            "worker_idle_fraction": tally.idle_fraction,
        }
        if states.get("COMPLETE"):
            best = study.best_trial
            summary.update({"best_trial": best.number, "best_value": best.value, "best_params": best.params})
        return summary

    def write(self, tally: WorkerTally) -> None:
        """Rewrite the results file and the plots; log the best value so far (step = trials finished here)."""
        summary = self.summary(tally)
        OmegaConf.save(OmegaConf.create(summary), self.task.sweep_dir / RESULTS_FILE)
        if "best_value" in summary:
            self.sweep_run.log_metrics({"sweep/best_value": summary["best_value"]}, step=tally.finished)
        self._write_plots(summary)

    def _write_plots(self, summary: dict[str, Any]) -> None:
        if importlib.util.find_spec("plotly") is None:
            if not self.plots_noted:
                log.info("no optuna plots: plotly is not installed (pip install plotly)")
                self.plots_noted = True
            return
        from optuna import visualization

        plots = {"optimization_history": visualization.plot_optimization_history}
        if summary.get("trials", {}).get("COMPLETE", 0) >= 2 and self.space.distributions:
            plots["param_importances"] = visualization.plot_param_importances
            plots["parallel_coordinate"] = visualization.plot_parallel_coordinate
        for name, plot in plots.items():
            try:
                figure = plot(self.study.study)
            except (ValueError, RuntimeError) as error:  # e.g. importances of params that never varied
                log.debug("plot %s skipped: %s", name, error)
                continue
            figure.write_html(self.task.sweep_dir / f"{name}.html", include_plotlyjs="directory")

    def finish(self, status: str, stop_reason: str | None, tally: WorkerTally) -> None:
        """Log the sweep's summary line and totals, and end the sweep's MLflow run with `status`."""
        summary = self.summary(tally)
        log.info(
            "sweep done (%s): trials %s, best %s %s, env steps %d, workers idle %.1f%% (%.0f s idle, %.0f s busy)",
            stop_reason or "all trials ended",
            summary["trials"],
            summary.get("best_value"),
            summary.get("best_params"),
            summary["env_steps"],
            100 * summary["worker_idle_fraction"],
            tally.idle_seconds,
            tally.busy_seconds,
        )
        metrics = {"sweep/env_steps": float(summary["env_steps"])}
        metrics["sweep/worker_idle_fraction"] = summary["worker_idle_fraction"]
        self.sweep_run.log_metrics(metrics, step=tally.finished)
        self.sweep_run.finish(status)
