"""One study shared by several sweeps (workers), on one machine or many: storage, lock, heartbeats, budget.

Workers started with the same `study_name` and storage URL share the study. Three things keep them honest:

- :class:`StudyLock` serialises "count the study's trials, then ask for one" across workers, so `n_trials`
  holds for the whole study (and the grid is enqueued once): a PostgreSQL advisory lock, or a lock file next to
  an sqlite database. Other storages get no lock: there two workers may each start one trial too many.
- :class:`Heartbeat` records a heartbeat per running trial of this worker. When a worker dies, its trials stop
  beating; any other worker's :func:`optuna.storages.fail_stale_trials` marks them FAIL after the grace period
  and the study's callback enqueues their params again (optuna's retry mechanism), for whichever worker asks next.
- :func:`trials_in_budget` counts what uses up `n_trials`: started or finished trials, except failed ones whose
  params were handed to a retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

# Key of our PostgreSQL advisory lock: any constant that other applications on the same database do not use.
_ADVISORY_LOCK_KEY = 0x1DEA5_0B7A


@contextlib.contextmanager
def quiet_heartbeat_warnings() -> Iterator[None]:
    """Silence optuna's warnings about heartbeats in this block: they say nothing our users could act on.

    Optuna 5 calls heartbeats and retries "experimental" and warns on every use, and warns on every `ask` that
    heartbeats are meant for `Study.optimize` (we record them ourselves, see :class:`Heartbeat`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def open_storage(
    url: str,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int,
    on_stale_trial: Callable[[optuna.Study, FrozenTrial], None],
) -> optuna.storages.RDBStorage:
    """An RDB storage for `url`; with `heartbeat_interval` set, trials beat and stale ones are failed and retried.

    A stale trial (its worker died) is enqueued again with its params, up to `max_retry` times, by optuna's
    retry callback; `on_stale_trial` is then told about it.
    """
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite:") else {}
    heartbeat: dict[str, Any] = {}
    with quiet_heartbeat_warnings():
        if heartbeat_interval is not None:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

            def stale(study: optuna.Study, trial: FrozenTrial) -> None:
                with quiet_heartbeat_warnings():
                    retry(study, trial)
                on_stale_trial(study, trial)

            heartbeat = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": grace_period,
                "heartbeat_stale_trial_callback": stale,
            }
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the study's trials whose worker stopped beating FAIL (and so retry them, see :func:`open_storage`)."""
    with quiet_heartbeat_warnings():
        optuna.storages.fail_stale_trials(study)


class StudyLock:
    """A lock shared by every worker of a storage, held while trials are counted and one is asked for.

    :param url: The optuna storage URL (PostgreSQL: advisory lock; sqlite file: `<db>.lock`; else no lock).
    """

    def __init__(self, url: str) -> None:
        self.url = sqlalchemy.engine.make_url(url)
        self._engine: sqlalchemy.Engine | None = None
        self._file: Path | None = None
        if self.url.get_backend_name() == "postgresql":
            self._engine = sqlalchemy.create_engine(self.url, pool_size=1)
        elif self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            self._file = Path(f"{self.url.database}.lock")

    @property
    def exact(self) -> bool:
        """Whether workers are really serialised (else each may start one trial beyond `n_trials`)."""
        return self._engine is not None or self._file is not None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for the `with` block."""
        if self._engine is not None:
            with self._engine.begin() as connection:  # the lock ends with the transaction, or with a dead worker
                connection.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
                yield
        elif self._file is not None:
            with self._file.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
                yield
        else:
            yield

    def close(self) -> None:
        """Release the lock's database connection."""
        if self._engine is not None:
            self._engine.dispose()


class Heartbeat:
    """Records a heartbeat for each running trial of this worker, every `interval` seconds, from a daemon thread.

    The first heartbeat is recorded at once when a trial is added: optuna only ever judges a trial stale that has
    beaten at least once.

    :param storage: The study's RDB storage (with heartbeats enabled).
    :param interval: Seconds between heartbeats.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, interval: int) -> None:
        self.storage = storage
        self.interval = interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        """Start beating for a trial."""
        self.storage.record_heartbeat(trial_id)
        with self._lock:
            self._trial_ids.add(trial_id)

    def discard(self, trial_id: int) -> None:
        """Stop beating for a trial (it has been told)."""
        with self._lock:
            self._trial_ids.discard(trial_id)

    def stop(self) -> None:
        """End the thread."""
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except sqlalchemy.exc.SQLAlchemyError as error:  # a database hiccup: the next beat may succeed
                    log.warning("heartbeat of trial id %d not recorded: %s", trial_id, error)


def trials_in_budget(trials: Sequence[FrozenTrial]) -> int:
    """How many trials use up `n_trials`: started or finished ones, minus failed ones that a retry replaced."""
    replaced = {number for trial in trials for number in trial.system_attrs.get("retry_history", [])}
    return sum(1 for trial in trials if trial.state != TrialState.WAITING and trial.number not in replaced)
