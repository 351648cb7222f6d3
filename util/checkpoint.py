"""Checkpoints of a run directory: model, replay buffer, normalisation statistics and loop state."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from util.model_protocol import owns_replay_buffer

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Checkpoint:
    """Where the parts of one checkpoint live, and the epoch-loop state saved with them."""

    folder: Path
    state: dict[str, Any]

    @property
    def model(self) -> Path:
        return self.folder / "model.zip"

    @property
    def replay_buffer(self) -> Path:
        return self.folder / "replay_buffer.pkl"

    @property
    def normalization(self) -> Path:
        return self.folder / "vecnormalize.pkl"


def save_checkpoint(run_dir: Path, model: BaseAlgorithm, env: VecEnv, state: dict[str, Any]) -> Checkpoint:
    """Write a complete checkpoint next to (then in place of) the previous one, so a crash never leaves half.

    The parts go to `checkpoint.partial/`, its `state.json` last (itself written to a temporary name and
    renamed, so its presence means the folder is complete); then `checkpoint/` becomes `checkpoint.old/` and
    the new one takes its name. A kill at any instant leaves a complete checkpoint that :func:`find_checkpoint`
    finds. `state` must be JSON-serialisable (epoch, env steps, metric history).
    """
    final = run_dir / CHECKPOINT_DIR
    staging = run_dir / (CHECKPOINT_DIR + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    checkpoint = Checkpoint(staging, state)
    model.save(checkpoint.model)
    if owns_replay_buffer(model):
        model.save_replay_buffer(checkpoint.replay_buffer)
    if isinstance(env, VecNormalize):
        env.save(str(checkpoint.normalization))
    state_file = staging / STATE_FILE
    state_file.with_suffix(".tmp").write_text(json.dumps(state, indent=1))
    state_file.with_suffix(".tmp").rename(state_file)
    previous = run_dir / (CHECKPOINT_DIR + ".old")
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)
    return Checkpoint(final, state)


def find_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint of a run directory, or None if it has none.

    Normally `checkpoint/`; after a kill during :func:`save_checkpoint`'s renames, the complete
    `checkpoint.partial/` (newer) or `checkpoint.old/`.
    """
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".partial", CHECKPOINT_DIR + ".old"):
        state_file = run_dir / name / STATE_FILE
        if state_file.exists():
            return Checkpoint(run_dir / name, json.loads(state_file.read_text()))
    return None
