"""The published bar, end to end (slow: `make test-slow`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiment.train import train


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_her_sac_reaches_0_9_on_fetchreach_within_10k_steps(make_cfg, tmp_path: Path, seed: int) -> None:
    cfg = make_cfg("progress_bar=false", f"seed={seed}", "n_epochs=10", "early_stop_last_n=1")
    train(cfg, run_dir=tmp_path / "run")
    log = (tmp_path / "run" / "train.log").read_text()
    successes = [
        float(line.split("test/success_rate ")[1].split()[0])
        for line in log.splitlines()
        if "epoch " in line and "test/success_rate" in line
    ]
    assert len(successes) <= 10 and max(successes) >= 0.9
