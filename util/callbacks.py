"""SB3 callbacks the epoch loop plugs into `learn`: training-episode statistics and a progress bar."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from stable_baselines3.common.callbacks import BaseCallback

from util.evaluation import info_success


class EpisodeStatsCallback(BaseCallback):
    """Collects return, length and success of every training episode that ends, until :meth:`pop` is called.

    Reads SB3 Monitor's `episode` info and the goal env's `is_success` at the episode's last step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []
        self.lengths: list[int] = []
        self.successes: list[float] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                episode = info.get("episode")
                if episode is not None:
                    self.returns.append(float(episode["r"]))
                    self.lengths.append(int(episode["l"]))
                success = info_success(info)
                if success is not None:
                    self.successes.append(success)
        return True

    def pop(self) -> dict[str, float]:
        """The epoch's `train/` metrics (only those with at least one finished episode), then reset."""
        metrics: dict[str, float] = {}
        if self.returns:
            metrics["train/mean_reward"] = float(np.mean(self.returns))
            metrics["train/ep_length"] = float(np.mean(self.lengths))
        if self.successes:
            metrics["train/success_rate"] = float(np.mean(self.successes))
        self.returns, self.lengths, self.successes = [], [], []
        return metrics


class ProgressBar:
    """A rich progress bar over the whole training: env steps, env steps/s, last test success and ETA.

    One bar spans every `learn` call of a training; :meth:`callback` gives the SB3 callback that advances it.
    """

    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TextColumn("{task.fields[fps]:>6.0f} steps/s"),
            TextColumn("test success {task.fields[success]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            disable=not enabled,
        )
        self.task = self.progress.add_task("training", total=total_steps, completed=start_step, fps=0.0, success="-")
        self.total_steps = total_steps
        self._start = (time.perf_counter(), start_step)
        self._window_start = self._start
        self._window_rated = False

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def update(self, steps: int, test_success: float | None = None) -> None:
        """Move the bar to `steps` env steps.

        Steps/s is the rate over the last window of more than a second; until one has passed (a short run), the
        rate since the bar started. A learner that overshoots the planned total moves the total along.
        """
        now = time.perf_counter()
        then, steps_then = self._window_start
        fields: dict[str, Any] = {}
        if now - then > 1.0:
            fields["fps"] = (steps - steps_then) / (now - then)
            self._window_start = (now, steps)
            self._window_rated = True
        elif not self._window_rated and now > self._start[0]:
            fields["fps"] = (steps - self._start[1]) / (now - self._start[0])
        if test_success is not None:
            fields["success"] = f"{test_success:.2f}"
        if steps > self.total_steps:
            self.total_steps = steps
            fields["total"] = steps
        self.progress.update(self.task, completed=steps, **fields)

    def callback(self, every: int = 50) -> BaseCallback:
        """An SB3 callback that updates the bar every `every` env steps."""
        return _ProgressCallback(self, every)


class _ProgressCallback(BaseCallback):
    def __init__(self, bar: ProgressBar, every: int) -> None:
        super().__init__()
        self.bar = bar
        self.every = every

    def _on_step(self) -> bool:
        if self.n_calls % self.every == 0:
            self.bar.update(self.num_timesteps)
        return True
