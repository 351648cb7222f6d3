"""Every algorithm with every feature, as real, tiny, end-to-end runs (`make test-matrix`; CI runs it).

The algorithms are run_testing's configurations (experiment/testing_algos.py: HER on each model class, HAC, the
plain algorithms), each on an env of the first kind it supports; the features are the rows of FEATURES. A new
algorithm joins by its line in testing_algos.py, a new feature by one entry here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from experiment import evaluate
from experiment.testing_algos import TESTING_ALGOS, AlgorithmUnderTest
from experiment.testing_envs import CONTINUOUS, DISCRETE
from experiment.train import train
from tests.conftest import PROJECT_ROOT, interrupt_train_cli, run_train_cli

ENV_OF_KIND = {CONTINUOUS: "FetchReach-v4", DISCRETE: "BitFlipping-v0"}
EPOCH_STEPS = 100


def _overrides(name: str) -> list[str]:
    """The algorithm's overrides on its env with a budget of two tiny epochs."""
    algo: AlgorithmUnderTest = TESTING_ALGOS[name]
    return [
        f"env={ENV_OF_KIND[algo.env_kinds[0]]}",
        *algo.overrides,
        *algo.tiny,
        "n_epochs=2",
        f"eval_after_n_steps={EPOCH_STEPS}",
        "n_test_rollouts=1",
        "progress_bar=false",
        "comet.mode=off",
    ]


def _history(run_dir: Path) -> dict[str, list[float]]:
    return json.loads((run_dir / "checkpoint" / "state.json").read_text())["history"]


def record_video(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """`render_test=record`: an MP4 of a test episode whose frames are not blank."""
    run_dir = tmp_path / "run"
    train(make_cfg(*_overrides(name), "render_test=record", "render_freq=2"), run_dir=run_dir)
    (video,) = sorted((run_dir / "videos").glob("*.mp4"))
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    frames = [np.frombuffer(frame, dtype=np.uint8) for frame in reader]
    assert len(frames) >= 2 and meta["size"][0] > 0
    assert float(frames[0].std()) > 5.0  # a rendered scene, not one flat colour


def interrupt_and_resume(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """SIGINT after the first epoch exits 130 with a checkpoint; `restore_from` continues the env-step counter."""
    first = tmp_path / "first"
    args = [*_overrides(name), f"base_logdir={tmp_path / 'data'}", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}"]
    saved = interrupt_train_cli(*args, "n_epochs=1000", run_dir=first, cwd=tmp_path, after_epoch=1)
    assert saved["epoch"] >= 1 and saved["env_steps"] >= EPOCH_STEPS
    resumed = tmp_path / "resumed"
    result = run_train_cli(
        *args, f"n_epochs={saved['epoch'] + 1}", f"restore_from={first}", f"hydra.run.dir={resumed}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    steps = _history(resumed)["time/total_timesteps"]
    assert steps[-1] >= saved["env_steps"] + EPOCH_STEPS and len(steps) == saved["epoch"] + 1


def evaluate_finished_run(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """experiment/evaluate.py re-tests the finished run from its checkpoint."""
    run_dir = tmp_path / "run"
    train(make_cfg(*_overrides(name)), run_dir=run_dir)
    capsys.readouterr()
    assert evaluate.main([str(run_dir), "--episodes", "2", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["episodes"] == 2 and 0.0 <= metrics["test/success_rate"] <= 1.0
    assert metrics["env_steps"] == _history(run_dir)["time/total_timesteps"][-1]


def sweep_two_trials(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """A 2-trial `--multirun` over the algorithm's default search space finishes both trials."""
    sweep_dir = tmp_path / "sweep"
    result = run_train_cli(
        "--multirun",
        *_overrides(name),
        "n_epochs=1",
        f"base_logdir={tmp_path / 'data'}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'm.db'}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    states = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())["trials"]
    assert states.get("COMPLETE", 0) + states.get("PRUNED", 0) == 2 and states.get("COMPLETE", 0) >= 1, states


def comet_offline_archive(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """`comet.mode=offline` leaves one Comet archive (a zip) in the run directory."""
    run_dir = tmp_path / "run"
    train(make_cfg(*_overrides(name), "n_epochs=1", "comet.mode=offline"), run_dir=run_dir)
    archives = list((run_dir / "comet").glob("*.zip"))
    assert len(archives) == 1 and archives[0].stat().st_size > 0


def deterministic(name: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture) -> None:
    """The same config and seed give identical metric histories (bit for bit on CPU), timings aside."""
    histories = []
    for attempt in ("a", "b"):
        train(make_cfg(*_overrides(name), "seed=5"), run_dir=tmp_path / attempt)
        histories.append({k: v for k, v in _history(tmp_path / attempt).items() if not k.startswith("time/")})
    assert histories[0] == histories[1]
    assert "test/success_rate" in histories[0]


FEATURES: dict[str, Callable[..., None]] = {
    "video": record_video,
    "interrupt_resume": interrupt_and_resume,
    "evaluate": evaluate_finished_run,
    "sweep": sweep_two_trials,
    "comet_offline": comet_offline_archive,
    "deterministic": deterministic,
}


@pytest.mark.matrix
@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("algorithm", list(TESTING_ALGOS))
def test_algorithm_with_feature(
    algorithm: str, feature: str, tmp_path: Path, make_cfg: Callable, capsys: pytest.CaptureFixture
) -> None:
    FEATURES[feature](algorithm, tmp_path, make_cfg, capsys)


def test_every_algorithm_config_group_is_in_the_matrix() -> None:
    groups = {path.stem for path in (PROJECT_ROOT / "conf" / "algorithm").glob("*.yaml")}
    covered = {
        override.split("=", 1)[1]
        for algo in TESTING_ALGOS.values()
        for override in algo.overrides
        if override.startswith("algorithm=")
    }
    her_classes = {
        override.split("=", 1)[1]
        for algo in TESTING_ALGOS.values()
        for override in algo.overrides
        if override.startswith("algorithm.model_class=")
    }
    assert groups <= covered
    per_model_class = OmegaConf.load(PROJECT_ROOT / "conf" / "algorithm" / "her.yaml").per_model_class
    assert set(per_model_class) <= her_classes
