"""`mlflow ui` started in the folder a training ran from shows its run with no flags."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from experiment.train import train
from tests.conftest import TINY


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_default_store_is_what_mlflow_ui_shows(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = make_cfg(*TINY, "n_epochs=1", "algorithm.learner.learning_starts=100", "mlflow.tracking_uri=null")
    train(cfg, run_dir=tmp_path / "run")
    assert (tmp_path / "mlflow.db").exists()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline = time.time() + 90
        while True:
            try:
                experiments = json.loads(urllib.request.urlopen(request, timeout=5).read())["experiments"]
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        (experiment,) = [e for e in experiments if e["name"] == "FetchReach-v4"]
        search = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        (run,) = json.loads(urllib.request.urlopen(search, timeout=10).read())["runs"]
        assert run["info"]["status"] == "FINISHED"
        assert {m["key"] for m in run["data"]["metrics"]} >= {"test/success_rate", "time/total_timesteps"}
    finally:
        server.terminate()
        server.wait(timeout=30)
