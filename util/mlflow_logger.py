"""MLflow bookkeeping for one training run, and a bridge that sends SB3's logger values to it."""

from __future__ import annotations

import fcntl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from stable_baselines3.common.logger import KVWriter

from util.errors import ConfigError

_PARAM_VALUE_LIMIT = 6000
_BATCH_LIMIT = 100  # MLflow accepts at most 100 params per batch call
# MLflow's default store (relative to the working directory) and where `mlflow ui` serves it by default.
DEFAULT_STORE = Path("mlflow.db")
MLFLOW_UI = "http://127.0.0.1:5000"


@contextmanager
def _store_creation_lock(tracking_uri: str | None) -> Iterator[None]:
    """Serialise first access to a sqlite store across processes.

    Two processes opening a fresh sqlite file at once both run MLflow's schema migrations and one fails with
    "table experiments already exists" (seen with two parallel trainings); a file lock beside the database
    makes the second wait until the first has created the schema.
    """
    uri = tracking_uri or mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ui_address(tracking_uri: str | None, experiment_id: str, run_id: str) -> str:
    """`mlflow ui[ --backend-store-uri URI]: <run page>`, or just the page on a tracking server.

    The page opens in the UI's "Model training" view (`workflowType=machine_learning`), which lists runs with
    their metrics; without it MLflow 3 opens experiments in its GenAI view.
    """
    page = f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    if tracking_uri is not None and tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    command = "mlflow ui"
    if tracking_uri is not None and Path(tracking_uri.removeprefix("sqlite:///")).resolve() != DEFAULT_STORE.resolve():
        command += f" --backend-store-uri {tracking_uri}"
    return f"{command}: {MLFLOW_UI}/{page}"


def check_tracking_server(tracking_uri: str | None, timeout: float = 5.0) -> None:
    """ConfigError naming `mlflow.tracking_uri` if it names a tracking server that does not answer.

    MLflow's client retries an unreachable server for minutes (with backoff) before it fails; one plain request
    with a timeout tells at once. Any HTTP answer counts as reachable; other stores are not probed.
    """
    if tracking_uri is None or not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConfigError(
            "mlflow.tracking_uri",
            f"no MLflow tracking server answers at {tracking_uri} ({reason}); start one "
            "(`mlflow server`) or use null for the local store ./mlflow.db",
        ) from None


class MlflowRun:
    """One MLflow run: created on construction, closed with :meth:`finish` as FINISHED, FAILED or KILLED.

    Uses an explicit client rather than MLflow's global "active run", so that several trainings in one process
    (tests, a sweep worker) never write into each other's runs. `tracking_uri=None` means MLflow's default store
    (a sqlite file in the working directory), which `mlflow ui` started there shows with no flags.
    """

    def __init__(self, tracking_uri: str | None, experiment_name: str, run_name: str, tags: dict[str, str]) -> None:
        with _store_creation_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri=tracking_uri)
            experiment = self.client.get_experiment_by_name(experiment_name)
            experiment_id = (
                experiment.experiment_id if experiment is not None else self.client.create_experiment(experiment_name)
            )
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.run_id = self.client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
        self.finished = False

    def ui_address(self) -> str:
        """How to look at this run: the `mlflow ui` command for the store, and the run's page in it."""
        return ui_address(self.tracking_uri, self.experiment_id, self.run_id)

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat params (values stringified and cut to MLflow's length limit)."""
        entries = [Param(key, str(value)[:_PARAM_VALUE_LIMIT]) for key, value in params.items()]
        for start in range(0, len(entries), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=entries[start : start + _BATCH_LIMIT])

    def set_tags(self, tags: dict[str, str]) -> None:
        """Add or overwrite tags."""
        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log several metrics at one step in one call."""
        self.log_metric_entries((key, value, step) for key, value in metrics.items())

    def log_metric_entries(self, entries: Iterable[tuple[str, float, int]]) -> None:
        """Log (key, value, step) triples in batches."""
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, int(step)) for key, value, step in entries]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder as an artifact."""
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str) -> None:
        """Close the run with an MLflow status name (FINISHED, FAILED, KILLED); later calls do nothing."""
        if not self.finished:
            self.client.set_terminated(self.run_id, RunStatus.to_string(RunStatus.from_string(status)))
            self.finished = True


class MlflowMetricsWriter(KVWriter):
    """SB3 logger output that keeps the learner's own `train/` and `rollout/` values for MLflow.

    Values are buffered and sent in one batch per epoch by :meth:`flush_to`, so logging costs one database
    transaction per epoch rather than one per SB3 dump.
    """

    prefixes = ("train/", "rollout/")

    def __init__(self) -> None:
        self.pending: list[tuple[str, float, int]] = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """Keep the numeric values under our prefixes."""
        for key, value in key_values.items():
            if key.startswith(self.prefixes) and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.pending.append((key, float(value), step))

    def flush_to(self, run: MlflowRun) -> None:
        """Send everything buffered to `run`."""
        if self.pending:
            run.log_metric_entries(self.pending)
            self.pending = []

    def close(self) -> None:
        """Nothing to close: the run owns the connection."""
