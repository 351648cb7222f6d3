"""The one exception type for bad configuration or input, so the entry point can exit 2 with one line."""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A config key holds a value we cannot run with.

    The message always names the key and, where there is a closed set, the allowed values, because the entry
    point prints exactly this one line and exits with code 2.
    """

    def __init__(self, key: str, problem: str, allowed: Iterable[str] | None = None) -> None:
        self.key = key
        message = f"{key}: {problem}"
        if allowed is not None:
            message += f" (allowed: {', '.join(str(a) for a in allowed)})"
        super().__init__(message)


class TrainingStopped(Exception):
    """A deliberate stop of a training from outside the learner, e.g. a sweep pruning a hopeless trial.

    Training treats it like an interrupt, not a failure: checkpoint, MLflow status KILLED, no traceback.
    """
