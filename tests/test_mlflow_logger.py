"""MLflow bookkeeping shared by parallel trainings (run_testing.sh, sweeps)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from mlflow.tracking import MlflowClient

from util.mlflow_logger import MlflowRun


def _open_run(uri: str, index: int) -> None:
    run = MlflowRun(uri, "shared", f"run{index}", {"index": str(index)})
    run.log_metrics({"x": float(index)}, step=1)
    run.finish("FINISHED")


def test_parallel_processes_can_open_a_fresh_sqlite_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open_run, args=(uri, i)) for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted(r.data.tags["index"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
