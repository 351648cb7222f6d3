"""Resuming: a run resumes with its own config, checkpoints survive a kill at any instant, signals stop between steps."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from stable_baselines3.common.callbacks import BaseCallback

from experiment.saved_run import resume_config
from experiment.train import train
from interface.algorithms import get_algorithm
from interface.envs import make_vec_env
from tests.conftest import TINY, run_train_cli
from util.checkpoint import find_checkpoint, save_checkpoint
from util.errors import ConfigError
from util.interrupts import StopBetweenSteps


def _state(run_dir: Path) -> dict:
    return json.loads((run_dir / "checkpoint" / "state.json").read_text())


def test_restore_resumes_the_saved_config_not_todays_defaults(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = [*TINY, f"mlflow.tracking_uri={store}", "comet.mode=off", "algorithm.learner.learning_starts=50"]
    first = tmp_path / "first"
    result = run_train_cli(*common, "algorithm.model_class=td3", "n_epochs=1", f"hydra.run.dir={first}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    resumed = tmp_path / "resumed"
    result = run_train_cli(*common, "n_epochs=2", f"restore_from={first}", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = OmegaConf.load(resumed / "config.yaml")
    assert saved.algorithm.model_class == "td3" and saved.n_epochs == 2
    assert _state(resumed)["env_steps"] == 400 and _state(resumed)["epoch"] == 2
    assert "resumed" in (resumed / "train.log").read_text()


@pytest.mark.parametrize(
    "override,key", [("env=FetchPush-v4", "env"), ("algorithm=sac", "algorithm.name"), ("seed=3", "seed")]
)
def test_restore_with_a_conflicting_key_exits_2_naming_it(override: str, key: str, tmp_path: Path, make_cfg) -> None:
    first = tmp_path / "first"
    train(make_cfg(*TINY, "n_epochs=1", "algorithm.learner.learning_starts=50"), run_dir=first)
    current = make_cfg(*TINY, override, f"restore_from={first}")
    with pytest.raises(ConfigError, match=f"^{key}: .*conflicts with the run being resumed"):
        resume_config(current, [override, f"restore_from={first}"])
    result = run_train_cli(
        override, f"restore_from={first}", f"base_logdir={tmp_path / 'data'}", "comet.mode=off", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"error: {key}:")


def test_restore_keeps_the_saved_value_when_an_override_repeats_it(tmp_path: Path, make_cfg) -> None:
    first = tmp_path / "first"
    train(make_cfg(*TINY, "n_epochs=1", "seed=3", "algorithm.learner.learning_starts=50"), run_dir=first)
    current = make_cfg(*TINY, "seed=3", "n_epochs=4", f"restore_from={first}")
    resumed = resume_config(current, ["seed=3", "n_epochs=4", f"restore_from={first}"])
    assert resumed.seed == 3 and resumed.n_epochs == 4 and resumed.restore_from == str(first)


def test_a_run_saved_before_a_key_existed_resumes_with_a_preset_and_trains_as_it_did(tmp_path: Path, make_cfg) -> None:
    first = tmp_path / "first"
    train(make_cfg(*TINY, "n_epochs=1", "+tuned=FetchPush-v4", "algorithm.learner.learning_starts=50"), run_dir=first)
    config = OmegaConf.load(first / "config.yaml")
    del config["grasped_start_prob"]  # as written before the key existed
    OmegaConf.save(config, first / "config.yaml")
    overrides = ["+tuned=FetchPush-v4", "algorithm.learner.learning_starts=50", "n_epochs=2", f"restore_from={first}"]
    resumed = resume_config(make_cfg(*TINY, *overrides), overrides)
    assert resumed.grasped_start_prob == 0.0 and resumed.n_epochs == 2
    with pytest.raises(ConfigError, match="^grasped_start_prob: .*conflicts with the run being resumed"):
        resume_config(make_cfg(*TINY, *overrides, "grasped_start_prob=0.5"), [*overrides, "grasped_start_prob=0.5"])


def _tiny_model(tmp_path: Path):
    env = make_vec_env("FetchReach-v4", {}, 0, normalize_obs=True)
    cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "algorithm" / "her.yaml")
    cfg.learner.learning_starts = 20
    return get_algorithm("her").build(cfg, env, 0, "cpu"), env


def test_a_kill_between_the_checkpoint_renames_keeps_the_newest_complete_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, env = _tiny_model(tmp_path)
    save_checkpoint(tmp_path, model, env, {"epoch": 1})
    real_rename = Path.rename
    renames: list[Path] = []

    def killed_after_first_rename(self: Path, target: Path) -> Path:
        if self.name in ("checkpoint", "checkpoint.partial"):
            renames.append(self)
            if len(renames) == 2:  # the process dies after checkpoint/ became checkpoint.old/
                raise KeyboardInterrupt("killed")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", killed_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, env, {"epoch": 2})
    monkeypatch.undo()
    assert not (tmp_path / "checkpoint").exists() and (tmp_path / "checkpoint.old").exists()
    found = find_checkpoint(tmp_path)
    assert found is not None and found.state == {"epoch": 2} and found.model.exists()
    (tmp_path / "checkpoint.partial" / "state.json").unlink()  # an unfinished new one: fall back to the old
    found = find_checkpoint(tmp_path)
    assert found is not None and found.state == {"epoch": 1}
    env.close()


class _SignalAt(BaseCallback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        if self.num_timesteps == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
        return True


def test_sigterm_stops_learning_after_the_env_step_it_arrived_in(tmp_path: Path) -> None:
    model, env = _tiny_model(tmp_path)
    with StopBetweenSteps() as stop, pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        model.learn(100, callback=[_SignalAt(37), stop.callback()])
    assert model.num_timesteps == 37
    assert model.replay_buffer.pos == 36  # the step the signal came in was not stored: no half-written transition
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or signal.getsignal(signal.SIGTERM) is not stop._handle
    env.close()


def test_a_signal_the_process_ignores_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopBetweenSteps() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == stop._handle
            os.kill(os.getpid(), signal.SIGINT)
            stop.check()  # nothing was requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
