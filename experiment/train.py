"""Train one agent: `python experiment/train.py [key=value ...]` (or a sweep with `--multirun`).

`train(cfg)` is the plain function behind the Hydra entry point; tests and the sweeper call it in-process.
"""

from __future__ import annotations

import sys

from experiment.cli import check_command_line, register_resolvers

if __name__ == "__main__":
    # A config mistake exits 2 with one line here, before the imports below (torch, SB3, MLflow) take seconds.
    check_command_line(sys.argv[1:])

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from experiment.epoch_loop import EpochHook, EpochLoop, LoopState, sweep_score
from experiment.saved_run import (
    TEST_SEED_OFFSET,
    VIDEO_SEED_OFFSET,
    load_model,
    make_run_env,
    require_checkpoint,
    restore_normalization,
    resume_config,
    uses_env_subprocess,
)
from experiment.validation import validate_config
from interface.algorithm_spec import AlgorithmSpec
from interface.algorithms import get_algorithm
from interface.envs import make_env, resolve_env_id
from util.checkpoint import Checkpoint
from util.comet_logger import MirroredRun
from util.errors import ConfigError, TrainingStopped
from util.interrupts import StopBetweenSteps
from util.mlflow_logger import MlflowRun
from util.run_info import flatten, git_short_hash
from util.video import FRAME_SIZE, GYM_RENDER_MODES, TestEpisodeRecorder, select_gl_backend

log = logging.getLogger("experiment.train")


def train(
    cfg: DictConfig,
    run_dir: Path | None = None,
    epoch_hooks: list[EpochHook] | None = None,
    overrides: Sequence[str] | None = None,
) -> float:
    """Train the configured algorithm on the configured env and return the sweep objective `hyperopt/score`.

    Raises ConfigError (before anything is written) for bad config or input. On KeyboardInterrupt, SIGTERM or a
    TrainingStopped from an epoch hook (a pruned sweep trial) it writes a checkpoint, marks the MLflow run KILLED
    and re-raises.

    :param cfg: The composed config (conf/main.yaml plus overrides).
    :param run_dir: Where the run writes; default: Hydra's run dir, or a fresh
        `<base_logdir>/<git hash>/<env>/<timestamp>` outside Hydra.
    :param epoch_hooks: Called after every epoch with (epoch, metrics), e.g. by a sweep to report progress.
    :param overrides: The Hydra overrides `cfg` was composed with (default: Hydra's task overrides when run by
        Hydra, else unknown). With `restore_from` they decide what the resumed run may change (see
        `experiment.saved_run.resume_config`).
    """
    checkpoint = None
    if cfg.restore_from is not None:
        checkpoint = require_checkpoint(Path(cfg.restore_from), "restore_from")
        cfg = resume_config(cfg, overrides if overrides is not None else _hydra_overrides())
    validate_config(cfg)
    env_id = resolve_env_id(cfg.env)
    spec = get_algorithm(cfg.algorithm.name)
    torch.set_num_threads(cfg.torch_threads)
    set_random_seed(cfg.seed)
    train_env, eval_env = _make_envs(cfg, env_id, checkpoint, uses_env_subprocess(cfg, spec))
    recorder = None
    try:
        recorder = _make_recorder(cfg, env_id)
        model = _make_model(cfg, spec, train_env, checkpoint)
        run_dir = _prepare_run_dir(cfg, run_dir)
        return _train_in_run_dir(cfg, model, train_env, eval_env, run_dir, checkpoint, epoch_hooks, recorder)
    finally:
        train_env.close()
        eval_env.close()
        if recorder is not None:
            recorder.close()


def _hydra_overrides() -> list[str] | None:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def _make_envs(
    cfg: DictConfig, env_id: str, checkpoint: Checkpoint | None, subprocess: bool = False
) -> tuple[VecEnv, VecEnv]:
    train_env = make_run_env(cfg, env_id, cfg.seed, subprocess, training=True)
    eval_env = make_run_env(cfg, env_id, cfg.seed + TEST_SEED_OFFSET)
    if checkpoint is not None:
        train_env = restore_normalization(train_env, checkpoint, required=False)
    if isinstance(eval_env, VecNormalize):
        eval_env.training = False
    return train_env, eval_env


def _make_recorder(cfg: DictConfig, env_id: str) -> TestEpisodeRecorder | None:
    """The test-episode recorder `render_test` asks for, on an env of its own (seed + 20000), or None."""
    if cfg.render_test == "none":
        return None
    select_gl_backend(cfg.render_test)
    env_kwargs = OmegaConf.to_container(cfg.env_kwargs, resolve=True)
    render_mode = GYM_RENDER_MODES[cfg.render_test]
    try:
        sized = {**FRAME_SIZE, **env_kwargs} if cfg.render_test == "record" else env_kwargs  # type: ignore[dict-item]
        env = make_env(env_id, sized, render_mode)  # type: ignore[arg-type]
    except ConfigError:  # envs without width/height arguments render at their own size
        env = make_env(env_id, env_kwargs, render_mode)  # type: ignore[arg-type]
    return TestEpisodeRecorder(env, cfg.render_test, cfg.render_freq, cfg.seed + VIDEO_SEED_OFFSET)


def _make_model(cfg: DictConfig, spec: AlgorithmSpec, env: VecEnv, checkpoint: Checkpoint | None) -> Any:
    if checkpoint is None:
        return spec.build(cfg.algorithm, env, cfg.seed, cfg.device)
    return load_model(cfg, spec, checkpoint, env, with_replay_buffer=True, key="restore_from")


def _prepare_run_dir(cfg: DictConfig, run_dir: Path | None) -> Path:
    if run_dir is None:
        if HydraConfig.initialized():
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        else:
            stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
            run_dir = Path(cfg.base_logdir) / git_short_hash() / str(cfg.env) / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return run_dir


@contextmanager
def _log_file(run_dir: Path) -> Iterator[None]:
    """Send this module's and the loop's log lines to `<run_dir>/train.log` when Hydra does not already."""
    target = run_dir / "train.log"
    root = logging.getLogger()
    if any(getattr(h, "baseFilename", None) == str(target.resolve()) for h in root.handlers):
        yield
        return
    handler = logging.FileHandler(target)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    loggers = [logging.getLogger("experiment")]
    previous_levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, previous_levels):
            logger.removeHandler(handler)
            logger.setLevel(level)
        handler.close()


def _train_in_run_dir(
    cfg: DictConfig,
    model: Any,
    train_env: VecEnv,
    eval_env: VecEnv,
    run_dir: Path,
    checkpoint: Checkpoint | None,
    epoch_hooks: list[EpochHook] | None,
    recorder: TestEpisodeRecorder | None,
) -> float:
    tags = {
        "env": str(cfg.env),
        "algorithm": str(cfg.algorithm.name),
        "git_commit": git_short_hash(),
        "run_dir": str(run_dir.resolve()),
    }
    if checkpoint is not None:
        tags["restored_from"] = str(Path(cfg.restore_from).resolve())
    run = MirroredRun(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name, run_dir.name, tags, cfg.comet.mode, run_dir)
    state = LoopState.from_json(checkpoint.state) if checkpoint is not None else LoopState()
    state.early_stopped = False
    # A scheduler's SIGTERM checkpoints like Ctrl-C; both take effect between env steps.
    interrupts = StopBetweenSteps()
    loop = EpochLoop(cfg, model, train_env, eval_env, run, run_dir, state, epoch_hooks, recorder, interrupts)
    with _log_file(run_dir), interrupts:
        try:
            run.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))  # type: ignore[arg-type]
            log.info("run %s in %s", run.run_id, run_dir)
            if checkpoint is not None:
                run.log_metric_entries(state.metric_entries())  # the resumed run carries its whole curve
                log.info(
                    "resumed from %s: %s env steps, %d epochs done",
                    checkpoint.folder.parent.resolve(),
                    f"{model.num_timesteps:,}",
                    state.epoch,
                )
            loop.run_epochs()
            loop.checkpoint()
            history = state.history.get(cfg.early_stop_data_column, [])
            score = sweep_score(history, cfg.early_stop_last_n)
            run.log_metrics({"hyperopt/score": score}, step=model.num_timesteps)
            log.info("hyperopt/score %.3f (the sweep objective) after %s env steps", score, f"{model.num_timesteps:,}")
        except (KeyboardInterrupt, TrainingStopped) as stop:
            log.warning("stopped (%s) at %d env steps: writing a checkpoint", stop or "interrupt", model.num_timesteps)
            loop.checkpoint()
            _upload_artifacts(run, run_dir)
            run.finish("KILLED")
            raise
        except BaseException:
            log.exception("training failed")
            _upload_artifacts(run, run_dir)
            run.finish("FAILED")
            raise
    _upload_artifacts(run, run_dir)
    run.finish("FINISHED")
    log.info(_final_line(cfg, state, model.num_timesteps, run_dir, run))
    return score


def _final_line(cfg: DictConfig, state: LoopState, env_steps: int, run_dir: Path, run: MlflowRun) -> str:
    """The console's last line: what the run reached, at what cost, where it is and how to look at it."""
    column = cfg.early_stop_data_column
    history = state.history.get(column, [])
    reached = f"{column} {history[-1]:.2f}" if history else f"no {column}"
    why = "early stop" if state.early_stopped else f"{state.epoch} epoch{'s' if state.epoch != 1 else ''}"
    return (
        f"done ({why}): {reached} after {env_steps:,} env steps, {_duration(state.wall_seconds)}; "
        f"run dir {_shown_path(run_dir)}; {run.ui_address()}"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies below it (as a user typed base_logdir)."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _upload_artifacts(run: MlflowRun, run_dir: Path) -> None:
    run.log_artifact(run_dir / "config.yaml")
    run.log_artifact(run_dir / "train.log")
    run.log_artifact(run_dir / "checkpoint" / "model.zip", "model")


def _remove_run_dir(run_dir: Path, base_logdir: Path) -> None:
    """Remove a run directory that bad input left with nothing but Hydra's files, and its empty parents."""
    shutil.rmtree(run_dir, ignore_errors=True)
    parent = run_dir.parent
    base = base_logdir.resolve()
    while parent.resolve() != base and base in parent.resolve().parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


register_resolvers()


@hydra.main(config_path="../conf", config_name="main", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Hydra entry point: run `train(cfg)`, turning bad input into exit 2 and interrupts into exit 130."""
    from util.trial_reporting import epoch_hooks  # a sweep's trial reports each epoch through these

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return train(cfg, run_dir, epoch_hooks=epoch_hooks())
    except ConfigError as error:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        logging.shutdown()
        _remove_run_dir(run_dir, Path(cfg.base_logdir))
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint in {run_dir / 'checkpoint'}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
