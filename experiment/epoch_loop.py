"""The epoch loop: learn for an epoch, test, log, checkpoint, decide whether to stop."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from util.callbacks import EpisodeStatsCallback, ProgressBar
from util.checkpoint import save_checkpoint
from util.evaluation import evaluate
from util.interrupts import StopBetweenSteps
from util.mlflow_logger import MlflowMetricsWriter, MlflowRun
from util.model_protocol import EpisodicModel
from util.video import TestEpisodeRecorder

log = logging.getLogger(__name__)

# Called after every epoch with (epoch, metrics); a hook returning True ends the training after this epoch.
EpochHook = Callable[[int, dict[str, float]], bool | None]
STEPS_METRIC = "time/total_timesteps"


@dataclass
class LoopState:
    """What survives a checkpoint: finished epochs, env steps, the metric history and wall time so far."""

    epoch: int = 0
    env_steps: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    wall_seconds: float = 0.0
    early_stopped: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the checkpoint's state.json)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoopState:
        """Inverse of :meth:`to_json`."""
        return cls(**data)

    def metric_entries(self) -> list[tuple[str, float, int]]:
        """The history as (key, value, env steps) triples, for a resumed run to log the curve it continues.

        Each epoch's step is its `time/total_timesteps`; a key missing from some epochs (`train/` metrics of an
        epoch in which no episode ended) cannot be matched to its steps and is left out.
        """
        steps = [int(step) for step in self.history.get(STEPS_METRIC, [])]
        return [
            (key, value, step)
            for key, values in self.history.items()
            if len(values) == len(steps)
            for value, step in zip(values, steps)
        ]


def early_stop_reached(history: list[float], threshold: float, last_n: int) -> bool:
    """True when the mean of the last `last_n` values exists and reaches `threshold`."""
    return len(history) >= last_n and sum(history[-last_n:]) / last_n >= threshold


def sweep_score(history: list[float], last_n: int) -> float:
    """`hyperopt/score`: mean of the whole curve plus mean of its last `last_n` values.

    The first term rewards learning fast, the second ending high (ideas_deep_rl2's objective); range [0, 2]
    for a success rate. NaN without any value.
    """
    if not history:
        return math.nan
    tail = history[-last_n:]
    return sum(history) / len(history) + sum(tail) / len(tail)


def steps_per_epoch(model: Any, eval_after_n_steps: int) -> int:
    """Env steps one epoch really takes: `eval_after_n_steps`, rounded up to whole rollouts for on-policy
    learners (PPO collects `n_steps` per env before it checks the budget)."""
    if isinstance(model, OnPolicyAlgorithm):
        rollout = model.n_steps * model.n_envs
        return math.ceil(eval_after_n_steps / rollout) * rollout
    return eval_after_n_steps


class EpochLoop:
    """Runs epochs of `eval_after_n_steps` env steps on a model, each followed by `n_test_rollouts` tests.

    After each epoch: contract metrics to MLflow (step = env steps), optional hooks (a sweep reports there),
    a checkpoint every `save_model_freq` epochs, the early-stop test on `early_stop_data_column`, and with a
    recorder a test-episode video every `render_freq` epochs and after the last.
    """

    def __init__(
        self,
        cfg: DictConfig,
        model: BaseAlgorithm,
        train_env: VecEnv,
        eval_env: VecEnv,
        run: MlflowRun,
        run_dir: Path,
        state: LoopState,
        epoch_hooks: list[EpochHook] | None = None,
        recorder: TestEpisodeRecorder | None = None,
        stop: StopBetweenSteps | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.train_env = train_env
        self.eval_env = eval_env
        self.run = run
        self.run_dir = run_dir
        self.state = state
        self.epoch_hooks = epoch_hooks or []
        self.ended_by_hook = False
        self.recorder = recorder
        self.stop = stop or StopBetweenSteps()
        self.episode_stats = EpisodeStatsCallback()
        self.sb3_writer = MlflowMetricsWriter()
        model.set_logger(Logger(folder=None, output_formats=[self.sb3_writer]))

    def checkpoint(self) -> None:
        """Write the model, buffer, normalisation and loop state to `<run_dir>/checkpoint`."""
        self.state.env_steps = self.model.num_timesteps
        save_checkpoint(self.run_dir, self.model, self.train_env, self.state.to_json())

    def run_epochs(self) -> LoopState:
        """Train until `n_epochs` are done or early stopping triggers; returns the final state."""
        cfg = self.cfg
        remaining = max(cfg.n_epochs - self.state.epoch, 0) * steps_per_epoch(self.model, cfg.eval_after_n_steps)
        total = self.model.num_timesteps + remaining
        with ProgressBar(total, self.model.num_timesteps, enabled=cfg.progress_bar) as bar:
            callbacks = [self.episode_stats, bar.callback(), self.stop.callback()]
            while self.state.epoch < cfg.n_epochs and not self.state.early_stopped and not self.ended_by_hook:
                metrics = self._one_epoch(callbacks)
                bar.update(self.model.num_timesteps, metrics.get("test/success_rate"))
        return self.state

    def _one_epoch(self, callbacks: list) -> dict[str, float]:
        cfg = self.cfg
        started = time.perf_counter()
        steps_before = self.model.num_timesteps
        self.model.learn(
            total_timesteps=cfg.eval_after_n_steps, reset_num_timesteps=False, callback=callbacks, log_interval=1
        )
        learn_seconds = time.perf_counter() - started
        metrics = evaluate(self.model, self.train_env, self.eval_env, cfg.n_test_rollouts)
        metrics.update(self.episode_stats.pop())
        if isinstance(self.model, EpisodicModel):  # HAC adds its layers' metrics
            metrics.update(self.model.epoch_metrics())
        self.state.epoch += 1
        self.state.wall_seconds += time.perf_counter() - started
        metrics.update(
            {
                STEPS_METRIC: float(self.model.num_timesteps),
                "time/fps": (self.model.num_timesteps - steps_before) / max(learn_seconds, 1e-9),
                "time/epoch": float(self.state.epoch),
                "time/wall_seconds": self.state.wall_seconds,
            }
        )
        for key, value in metrics.items():
            self.state.history.setdefault(key, []).append(value)
        self.run.log_metrics(metrics, step=self.model.num_timesteps)
        self.sb3_writer.flush_to(self.run)
        log.info(
            "epoch %d  steps %d  %s  fps %.0f",
            self.state.epoch,
            self.model.num_timesteps,
            "  ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("test/")),
            metrics["time/fps"],
        )
        column = self.state.history.get(cfg.early_stop_data_column, [])
        self.state.early_stopped = early_stop_reached(column, cfg.early_stop_threshold, cfg.early_stop_last_n)
        last_epoch = self.state.early_stopped or self.state.epoch >= cfg.n_epochs
        if self.recorder is not None and self.recorder.due(self.state.epoch, last_epoch):
            videos = self.recorder.record(self.model, self.train_env, self.model.num_timesteps, self.run_dir / "videos")
            for path in videos:
                self.run.log_artifact(path, "videos")
        if cfg.save_model_freq > 0 and self.state.epoch % cfg.save_model_freq == 0:
            self.checkpoint()
        ends = [hook(self.state.epoch, metrics) for hook in self.epoch_hooks]  # every hook sees every epoch
        if any(ends) and not last_epoch:
            log.info("epoch hook: training ends after epoch %d (a sweep's learned epoch cap)", self.state.epoch)
            self.ended_by_hook = True
        self.stop.check()  # a signal during testing or recording stops here, with the epoch complete
        return metrics
