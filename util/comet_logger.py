"""Comet mirror of an MLflow run: the same params, metrics (same steps), tags and artifacts, online or offline.

`comet.mode`: `auto` logs online when a Comet API key is configured (COMET_API_KEY or ~/.comet.config) and
otherwise writes an offline archive to `<run_dir>/comet/<key>.zip` (send it later with `comet upload <zip>`);
`online`, `offline` and `off` force a mode. Comet never fails a training run: `online` without a key, or an
online experiment that cannot reach the server (comet_ml gives up after about 35 s), falls back to an offline
archive, and any later Comet error turns the mirror off with one warning. The API key is only ever handed to comet_ml, never logged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from util.mlflow_logger import MlflowRun

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".gif")
# Everything comet_ml would collect by itself is off: it is slow, and environment details could hold secrets.
_EXPERIMENT_OPTIONS: dict[str, Any] = {
    "auto_output_logging": False,
    "auto_param_logging": False,
    "auto_metric_logging": False,
    "auto_histogram_weight_logging": False,
    "log_git_metadata": False,
    "log_git_patch": False,
    "log_env_details": False,
    "log_env_gpu": False,
    "log_env_cpu": False,
    "log_env_host": False,
    "log_env_network": False,
    "log_env_disk": False,
    "log_code": False,
    "log_graph": False,
    "parse_args": False,
    "display_summary_level": 0,
}


def _import_comet() -> Any:
    # Without this, comet_ml warns that it was imported after torch and patches frameworks we never use.
    os.environ.setdefault("COMET_DISABLE_AUTO_LOGGING", "1")
    # Its INFO lines ("still saving offline stats...", the upload command) come after training's last line;
    # CometMirror.end logs where the archive is and how to send it instead.
    os.environ.setdefault("COMET_LOGGING_CONSOLE", "WARNING")
    import comet_ml

    return comet_ml


def comet_api_key_configured() -> bool:
    """True when comet_ml finds an API key (COMET_API_KEY or ~/.comet.config); the key itself is not returned."""
    return bool(_import_comet().get_config()["comet.api_key"])


class CometMirror:
    """One Comet experiment that receives copies of a run's logs; every call is safe to make after a failure.

    :param experiment: A started comet_ml Experiment or OfflineExperiment.
    :param offline_directory: Where the offline archive goes, or None for an online experiment.
    """

    def __init__(self, experiment: Any, offline_directory: Path | None) -> None:
        self.experiment: Any | None = experiment
        self.offline_directory = offline_directory

    @classmethod
    def open(
        cls, mode: str, run_dir: Path, project_name: str, run_name: str, tags: dict[str, str]
    ) -> CometMirror | None:
        """Start the Comet experiment `mode` asks for; None for `off` or when Comet cannot start at all."""
        if mode == "off":
            return None
        try:
            mirror = cls._start(mode, run_dir, project_name)
            assert mirror.experiment is not None
            mirror.experiment.set_name(run_name)
            mirror.experiment.add_tags([tags[key] for key in ("env", "algorithm") if key in tags])
            mirror.experiment.log_others(tags)
        except Exception as error:  # Comet is a mirror: it must never stop a training run
            log.warning("Comet mirror off: could not start an experiment (%s)", type(error).__name__)
            return None
        return mirror

    @classmethod
    def _start(cls, mode: str, run_dir: Path, project_name: str) -> CometMirror:
        comet_ml = _import_comet()
        online = mode == "online" or (mode == "auto" and comet_api_key_configured())
        if online:
            if not comet_api_key_configured():
                log.warning("comet.mode=online but no Comet API key is configured: writing an offline archive")
            else:
                experiment = comet_ml.Experiment(project_name=project_name, **_EXPERIMENT_OPTIONS)
                if getattr(experiment, "alive", False):
                    log.info("Comet: logging online to project %s", project_name)
                    return cls(experiment, None)
                experiment.end()
                log.warning("Comet server unreachable: writing an offline archive instead")
        offline_directory = run_dir / "comet"
        offline_directory.mkdir(parents=True, exist_ok=True)
        experiment = comet_ml.OfflineExperiment(
            offline_directory=str(offline_directory), project_name=project_name, **_EXPERIMENT_OPTIONS
        )
        return cls(experiment, offline_directory)

    def _call(self, action: Callable[[Any], Any]) -> None:
        if self.experiment is None:
            return
        try:
            action(self.experiment)
        except Exception as error:  # never let the mirror fail training
            log.warning("Comet mirror off after an error (%s)", type(error).__name__)
            self.experiment = None

    def log_params(self, params: dict[str, Any]) -> None:
        """Mirror flat params."""
        self._call(lambda experiment: experiment.log_parameters(params))

    def log_metric_entries(self, entries: Iterable[tuple[str, float, int]]) -> None:
        """Mirror (key, value, step) triples, grouped by step."""
        by_step: dict[int, dict[str, float]] = {}
        for key, value, step in entries:
            by_step.setdefault(int(step), {})[key] = float(value)
        for step, metrics in sorted(by_step.items()):
            self._call(lambda experiment, metrics=metrics, step=step: experiment.log_metrics(metrics, step=step))

    def log_tags(self, tags: dict[str, str]) -> None:
        """Mirror key-value tags (as Comet 'others')."""
        self._call(lambda experiment: experiment.log_others(tags))

    def log_file(self, path: Path, artifact_path: str | None) -> None:
        """Mirror a file or every file of a folder: videos as Comet videos, everything else as assets."""
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if not file.exists():
                continue
            name = f"{artifact_path}/{file.name}" if artifact_path else file.name
            if file.suffix == ".mp4":
                self._call(lambda experiment, file=file, name=name: experiment.log_video(str(file), name=name))
            else:
                self._call(lambda experiment, file=file, name=name: experiment.log_asset(str(file), file_name=name))

    def end(self, status: str) -> None:
        """Record the final status and close the experiment (writing the offline archive, if offline)."""
        self._call(lambda experiment: experiment.log_other("status", status))
        self._call(lambda experiment: experiment.end())
        if self.experiment is not None and self.offline_directory is not None:
            log.info("Comet offline archive in %s (send it with `comet upload <zip>`)", self.offline_directory)
        self.experiment = None


class MirroredRun(MlflowRun):
    """An MLflow run whose params, metrics, tags and artifacts are also sent to a Comet mirror.

    :param tracking_uri: MLflow tracking URI (None = MLflow's default store).
    :param experiment_name: MLflow experiment name, also the Comet project name.
    :param run_name: Run name in both tools.
    :param tags: Run tags.
    :param comet_mode: `auto`, `online`, `offline` or `off`.
    :param run_dir: The run directory; offline Comet archives go to its `comet/` folder.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        experiment_name: str,
        run_name: str,
        tags: dict[str, str],
        comet_mode: str,
        run_dir: Path,
    ) -> None:
        super().__init__(tracking_uri, experiment_name, run_name, tags)
        self.comet = CometMirror.open(comet_mode, run_dir, experiment_name, run_name, tags)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat params to MLflow and Comet."""
        super().log_params(params)
        if self.comet is not None:
            self.comet.log_params(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Add or overwrite tags in MLflow and Comet."""
        super().set_tags(tags)
        if self.comet is not None:
            self.comet.log_tags(tags)

    def log_metric_entries(self, entries: Iterable[tuple[str, float, int]]) -> None:
        """Log (key, value, step) triples to MLflow and Comet."""
        entries = list(entries)
        super().log_metric_entries(entries)
        if self.comet is not None:
            self.comet.log_metric_entries(entries)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder to MLflow and Comet."""
        super().log_artifact(path, artifact_path)
        if self.comet is not None:
            self.comet.log_file(path, artifact_path)

    def finish(self, status: str) -> None:
        """Close the MLflow run and the Comet experiment."""
        already_finished = self.finished
        super().finish(status)
        if self.comet is not None and not already_finished:
            self.comet.end(status)


def offline_archives(folder: Path) -> list[Path]:
    """The offline Comet archives written below `folder` (each run writes `<run dir>/comet/<id>.zip`)."""
    return sorted(folder.rglob("comet/*.zip"))


def upload_offline_archive(archive: Path, timeout: float = 300) -> bool:
    """Send one offline archive with comet_ml's own uploader; False (never an exception) if it fails."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "comet_ml.scripts.comet_upload", str(archive)],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
