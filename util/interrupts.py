"""Ctrl-C and SIGTERM that stop training between env steps, never inside a buffer write or a gradient step."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopBetweenSteps:
    """While active, SIGINT and SIGTERM only ask training to stop; the request is honoured at the next safe point.

    Safe points are the end of an env step (:meth:`callback` in `learn`, called after the step's transition is
    complete and before it is stored or trained on) and :meth:`check` between an epoch's phases; there a
    KeyboardInterrupt is raised, which the caller turns into a checkpoint. A second signal before that raises at
    once. A signal the process ignores (SIGINT of a background job started by a non-interactive shell) stays
    ignored, as Python itself leaves it. Outside the main thread (where Python cannot install handlers) it changes
    nothing.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopBetweenSteps:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"{name} again")
        self.requested = name

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.requested is not None:
            raise KeyboardInterrupt(self.requested)

    def callback(self) -> BaseCallback:
        """An SB3 callback that checks after every env step."""
        return _CheckAfterStep(self)


class _CheckAfterStep(BaseCallback):
    def __init__(self, stop: StopBetweenSteps) -> None:
        super().__init__()
        self.stop = stop

    def _on_step(self) -> bool:
        self.stop.check()
        return True
