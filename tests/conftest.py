"""Shared fixtures: composing configs in-process and a throwaway MLflow store per test session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from experiment.cli import register_resolvers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"

# A budget that exercises every part of the loop in a few seconds.
TINY = [
    "n_epochs=2",
    "eval_after_n_steps=200",
    "n_test_rollouts=2",
    "progress_bar=false",
    "save_model_freq=1",
]


@pytest.fixture(scope="session", autouse=True)
def _sb3_logs_in_pytest_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SB3 makes a /tmp/SB3-<time> folder on every learn() without a custom logger; keep them in pytest's tmp."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3_logs")))


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite MLflow store per test session (creating one costs ~2 s of migrations)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tmp_path: Path, tracking_uri: str) -> Callable[..., DictConfig]:
    """Compose conf/main.yaml with overrides, logging into a temp dir and the session's MLflow store."""
    register_resolvers()

    def _make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                "main",
                # Comet is off unless a test asks for it: its offline archive adds seconds to every run.
                overrides=[
                    f"base_logdir={tmp_path / 'data'}",
                    f"mlflow.tracking_uri={tracking_uri}",
                    "comet.mode=off",
                    *overrides,
                ],
            )

    return _make


def run_train_cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None, merge_stderr: bool = False
) -> subprocess.CompletedProcess:
    """Run `python experiment/train.py args...` as a user would, capturing output.

    The project root is on PYTHONPATH so that test env modules (`env=tests.<module>:Id`) import from any `cwd`;
    `env` adds variables; `merge_stderr` interleaves stderr into stdout in the order a terminal shows them.
    """
    environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(PROJECT_ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "experiment" / "train.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
        text=True,
        timeout=timeout,
        env=environment,
    )


def interrupt_train_cli(*args: str, run_dir: Path, cwd: Path, after_epoch: int, timeout: float = 240) -> dict:
    """Start `python experiment/train.py args...` in `run_dir`, send SIGINT once epoch `after_epoch` is logged,
    check that it exits 130, and return its checkpoint's state."""
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "experiment" / "train.py"), *args, f"hydra.run.dir={run_dir}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(PROJECT_ROOT)),
        # As in a terminal: a runner that ignores SIGINT (a background job) must not pass that on to the run.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = run_dir / "train.log"
    deadline = time.time() + timeout
    while not (log.exists() and f"epoch {after_epoch} " in log.read_text()):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    return json.loads((run_dir / "checkpoint" / "state.json").read_text())
