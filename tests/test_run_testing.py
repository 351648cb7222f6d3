"""run_testing.sh and its Python parts: command generation, crash checks, performance verdicts, parallelism."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from experiment import check_error_logs, validate_performance_testing
from experiment.generate_testing_commands import function_commands, performance_commands, select, write
from experiment.testing_algos import AlgorithmUnderTest, PerformanceBar
from tests.conftest import PROJECT_ROOT

STUB_ALGOS = {
    "a-cont": AlgorithmUnderTest(("algorithm=sac",), ("continuous",)),
    "b-both": AlgorithmUnderTest(("algorithm=ppo",), ("continuous", "discrete"), ("algorithm.learner.n_steps=8",)),
}
STUB_ENVS = {"Cont-v0": "continuous", "Disc-v0": "discrete"}


def test_function_mode_leaves_out_documented_exclusions(tmp_path: Path) -> None:
    algos = {"c": AlgorithmUnderTest(("algorithm=sac",), ("continuous",), not_on={"Cont-v0": "needs bounds"})}
    envs = {"Cont-v0": "continuous", "Cont-v1": "continuous"}
    assert [c.name for c in function_commands(algos, envs, "py", tmp_path, "sqlite:///x.db")] == ["c__Cont-v1"]


def test_function_mode_pairs_every_algorithm_with_every_compatible_env(tmp_path: Path) -> None:
    commands = function_commands(STUB_ALGOS, STUB_ENVS, "py", tmp_path, "sqlite:///x.db")
    assert [c.name for c in commands] == ["a-cont__Cont-v0", "b-both__Cont-v0", "b-both__Disc-v0"]
    assert "env=Disc-v0 algorithm=ppo algorithm.learner.n_steps=8 n_epochs=2" in commands[2].command
    assert f"hydra.run.dir={tmp_path}/runs/b-both__Disc-v0/seed0" in commands[2].command
    assert [c.name for c in select(commands, "Disc")] == ["b-both__Disc-v0"]
    write(commands, tmp_path / "cmds.txt")
    assert (tmp_path / "cmds.txt").read_text().count("\n") == 3
    assert [e["name"] for e in json.loads((tmp_path / "cmds.json").read_text())] == [c.name for c in commands]


def test_performance_mode_runs_each_seed_with_the_bar_budget(tmp_path: Path) -> None:
    bar = PerformanceBar("a-cont", "Cont-v0", 0.8, 5000, 2, 3, overrides=("algorithm.learner.gamma=0.9",))
    commands = performance_commands((bar,), STUB_ALGOS, "py", tmp_path, "sqlite:///x.db")
    assert [c.seed for c in commands] == [0, 1, 2]
    assert all(c.bar is not None and c.bar["min_value"] == 0.8 for c in commands)
    for part in ("n_epochs=5", "eval_after_n_steps=1000", "early_stop_threshold=0.8", "algorithm.learner.gamma=0.9"):
        assert part in commands[0].command
    # A bar measured with a test every 5,000 env steps is run at that cadence, over the same budget.
    sparse = PerformanceBar("a-cont", "Cont-v0", 0.8, 400_000, 2, 3, test_every=5000)
    (first, *_) = performance_commands((sparse,), STUB_ALGOS, "py", tmp_path, "sqlite:///x.db")
    assert "eval_after_n_steps=5000" in first.command and "n_epochs=80" in first.command


def _log_run(
    client: MlflowClient, experiment: str, run_dir: Path, values: list[tuple[int, float]], status: str
) -> None:
    run = client.create_run(experiment, tags={"run_dir": str(run_dir.resolve())})
    metrics = [Metric("test/success_rate", v, 0, s) for s, v in values]
    metrics += [Metric("time/wall_seconds", 10.0 * i, 0, s) for i, (s, _) in enumerate(values)]
    client.log_batch(run.info.run_id, metrics=metrics)
    client.set_terminated(run.info.run_id, status)


def test_validator_counts_passing_failing_and_crashed_seeds(tmp_path: Path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("run_testing")
    bars = (
        PerformanceBar("a-cont", "Good-v0", 0.9, 3000, 2, 3),
        PerformanceBar("a-cont", "Bad-v0", 0.9, 3000, 2, 3),
    )
    commands = performance_commands(bars, STUB_ALGOS, "py", tmp_path, uri)
    runs = {
        ("a-cont__Good-v0", 0): ([(1000, 0.2), (2000, 0.95)], "FINISHED"),
        ("a-cont__Good-v0", 1): ([(1000, 0.5), (3000, 0.9)], "FINISHED"),
        ("a-cont__Good-v0", 2): ([(1000, 0.1)], "FAILED"),
        # reaches the value only after the bar's step, and crashes on seed 1; seed 2 never ran
        ("a-cont__Bad-v0", 0): ([(3000, 0.5), (4000, 1.0)], "FINISHED"),
        ("a-cont__Bad-v0", 1): ([(1000, 0.95)], "FAILED"),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    for index, command in enumerate(commands):
        if (command.name, command.seed) in runs:
            values, status = runs[(command.name, command.seed)]
            _log_run(client, experiment, Path(command.run_dir), values, status)
            (logs / f"{index}.rc").write_text("0\n" if status == "FINISHED" else "1\n")
    write(commands, tmp_path / "cmds.txt")
    code = validate_performance_testing.main(
        ["--commands", str(tmp_path / "cmds.json"), "--logs", str(logs), "--tracking-uri", uri]
    )
    assert code == 1
    results = {
        r.name: r
        for r in validate_performance_testing.judge(check_error_logs.read_outcomes(tmp_path / "cmds.json", logs), uri)
    }
    good, bad = results["a-cont__Good-v0"], results["a-cont__Bad-v0"]
    assert [s.passed for s in good.seeds] == [True, True, False] and good.passed
    assert [s.first_step_reached for s in good.seeds] == [2000, 3000, None]
    assert [s.passed for s in bad.seeds] == [False, False, False] and not bad.passed
    assert [s.status for s in bad.seeds] == ["finished", "crashed", "no run"]
    assert bad.seeds[0].best_value == 0.5  # the 1.0 at step 4000 is past the bar
    out = capsys.readouterr().out
    assert "1 passed, 1 failed" in out and "PASS" in out and "FAIL" in out


def _run_script(tmp_path: Path, lines: list[str], procs: int) -> subprocess.CompletedProcess:
    cmd_file = tmp_path / "cmds.sh"
    cmd_file.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, RUN_TESTING_DIR=str(tmp_path / "out"))
    return subprocess.run(
        [str(PROJECT_ROOT / "run_testing.sh"), "-t", "function", "-p", str(procs), "-c", str(cmd_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_runner_never_has_more_than_p_commands_alive(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    line = f'echo "start $(date +%s%N)" >> {trace}; sleep 0.4; echo "end $(date +%s%N)" >> {trace}'
    result = _run_script(tmp_path, [line] * 6, procs=2)
    assert result.returncode == 0, result.stdout + result.stderr
    events = sorted((int(t), kind) for kind, t in (line.split() for line in trace.read_text().splitlines()))
    alive = peak = 0
    for _, kind in events:
        alive += 1 if kind == "start" else -1
        peak = max(peak, alive)
    assert len(events) == 12 and peak == 2


def test_runner_exit_code_reports_a_failing_command(tmp_path: Path) -> None:
    result = _run_script(tmp_path, ["true", "echo boom; exit 3", "true"], procs=2)
    assert result.returncode == 1
    assert "FAILED command 1 (exit 3)" in result.stdout and "boom" in result.stdout


def test_runner_rejects_a_bad_type(tmp_path: Path) -> None:
    result = subprocess.run([str(PROJECT_ROOT / "run_testing.sh"), "-t", "fast"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: -t: unknown value 'fast' (allowed: function, performance)"
