"""experiment/evaluate.py: re-testing a run from its checkpoint with training's own test protocol."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from experiment.evaluate import evaluate_run, main, wilson_interval
from experiment.saved_run import TEST_SEED_OFFSET
from experiment.train import train
from tests.conftest import TINY


def test_wilson_interval_matches_published_values() -> None:
    # 95% Wilson intervals (z = 1.96) as tabulated by Newcombe (1998), Table I.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.72 < low < 0.73
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_reproduces_the_runs_own_last_test(make_cfg, tmp_path: Path) -> None:
    # One epoch: the run tested once on env seed + 10000; re-testing on that seed with as many episodes must give
    # the same episodes, so the same return and length (observation statistics come from the checkpoint).
    cfg = make_cfg(
        *TINY, "n_epochs=1", "n_test_rollouts=3", "env_subprocess=false", "algorithm.learner.learning_starts=100"
    )
    run_dir = tmp_path / "run"
    train(cfg, run_dir=run_dir)
    history = json.loads((run_dir / "checkpoint" / "state.json").read_text())["history"]
    metrics = evaluate_run(run_dir, episodes=3, seed=cfg.seed + TEST_SEED_OFFSET)
    assert metrics["test/mean_reward"] == pytest.approx(history["test/mean_reward"][-1])
    assert metrics["test/ep_length"] == pytest.approx(history["test/ep_length"][-1])
    assert metrics["test/success_rate"] == pytest.approx(history["test/success_rate"][-1])
    assert metrics["env_steps"] == 200 and metrics["episodes"] == 3
    assert metrics["test/success_low"] <= metrics["test/success_rate"] <= metrics["test/success_high"]
    # The same seed gives the same episodes again; the default seed is the run's seed + 30000.
    assert evaluate_run(run_dir, episodes=3, seed=cfg.seed + TEST_SEED_OFFSET) == metrics
    assert evaluate_run(run_dir, episodes=1)["seed"] == cfg.seed + 30_000


def test_hac_run_reports_its_layers(make_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = make_cfg(
        *TINY, "n_epochs=1", "algorithm=hac", "algorithm.learner.learning_starts=100", "algorithm.learner.batch_size=32"
    )
    run_dir = tmp_path / "hac"
    train(cfg, run_dir=run_dir)
    assert main([str(run_dir), "--episodes", "4", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["episodes"] == 4 and metrics["seed"] == cfg.seed + 30_000
    # FetchReach's 50 steps as 5 subgoals of at most 10 steps: the top layer runs once per episode.
    assert 1 <= metrics["test_layer0/sub_episode_steps"] <= 10
    assert 0.0 <= metrics["test_layer1/success_rate"] <= 1.0 and math.isfinite(metrics["test_layer1/goal_distance"])
    assert main([str(run_dir), "--episodes", "2"]) == 0
    assert "success" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["missing", "no_config", "no_checkpoint", "zero_episodes"])
def test_bad_input_exits_2_with_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    episodes = "5"
    if case != "missing":
        run_dir.mkdir()
    if case in ("no_checkpoint", "zero_episodes"):
        (run_dir / "config.yaml").write_text("seed: 0\nalgorithm: {name: her}\n")
    if case == "zero_episodes":
        episodes = "0"
    assert main([str(run_dir), "--episodes", episodes]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert ("--episodes" if case == "zero_episodes" else "run_dir") in err[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        {"missing": [], "no_config": ["run"]}.get(case, ["run", "config.yaml"])
    )
