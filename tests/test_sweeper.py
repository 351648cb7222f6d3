"""The Optuna sweeper plugin: discovery, search-space parsing, pruning, and real `--multirun` sweeps.

The multirun sweeps use `tests.sweeper_faults:Faulty-v0` (4-bit BitFlipping) whose `env_kwargs.fault` makes a
trial raise, return NaN or kill its own process, with a grid over the faults so each happens exactly once.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hydra_plugins.ideas_optuna_sweeper._records import RESULTS_FILE
from hydra_plugins.ideas_optuna_sweeper._scheduling import STOP_FILE
from hydra_plugins.ideas_optuna_sweeper._search_space import parse_search_space
from hydra_plugins.ideas_optuna_sweeper._study import SweepStudy
from hydra_plugins.ideas_optuna_sweeper._task import TaskKeys
from hydra_plugins.ideas_optuna_sweeper._validation import SweepPlan
from hydra_plugins.ideas_optuna_sweeper.config import IdeasOptunaSweeperConf
from tests.sweeper_faults import PROJECT_ROOT, sweep_command
from util.comet_logger import offline_archives
from util.errors import ConfigError
from util.trial_reporting import (
    CAPPED_AT_ATTR,
    EPOCH_CAP_ATTR,
    TrialLink,
    TrialPruned,
    epoch_hooks,
    hold_value_after_success,
)

FAULTS = "ok_a,ok_b,ok_c,raise,nan_success,kill"


def _sweep(tmp: Path, *args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    command, env = sweep_command(tmp, *args)
    if not wait:
        return subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(command, check=False, cwd=tmp, env=env, capture_output=True, text=True, timeout=400)


def _study(tmp: Path) -> optuna.Study:
    return optuna.load_study(study_name="faults", storage=f"sqlite:///{tmp / 'sweep' / 'optuna.db'}")


def _trial_id(storage: str, study: optuna.Study, trial: optuna.Trial) -> int:
    """A trial's storage-wide id, through optuna's public storage API (as the sweeper finds it)."""
    rdb = optuna.storages.RDBStorage(storage)
    return rdb.get_trial_id_from_study_id_trial_number(rdb.get_study_id_from_name(study.study_name), trial.number)


def test_plugin_is_discovered_without_importing_optuna() -> None:
    code = (
        "import sys; from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
        "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)];"
        "print(names, 'optuna' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True).stdout
    assert "IdeasOptunaSweeper" in out and out.strip().endswith("False")
    assert any(p.__name__ == "IdeasOptunaSweeper" for p in Plugins.instance().discover(Sweeper))


def _private_uses(path: Path) -> list[str]:
    """`x._name` on anything but `self`/`cls`, and imports from other packages' `_private` modules, in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        modules += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        for module in modules:
            parts = module.split(".")
            if parts[0] not in ("hydra_plugins", "util") and any(p.startswith("_") for p in parts if p != "__future__"):
                found.append(f"{path.name}:{node.lineno}: import {module}")
    return found


def test_the_sweeper_uses_no_private_attributes_of_optuna_or_hydra() -> None:
    """Optuna may rename its private attributes in any release (requirements allow optuna>=4,<6)."""
    files = [*(PROJECT_ROOT / "hydra_plugins").rglob("*.py"), PROJECT_ROOT / "util" / "trial_reporting.py"]
    assert len(files) > 5
    assert [use for path in files for use in _private_uses(path)] == []
    assert _private_uses(Path(__file__)) == []  # the tests below reach optuna the same way


def test_the_study_finds_trial_ids_and_attributes_through_its_own_storage(tmp_path: Path) -> None:
    settings = IdeasOptunaSweeperConf(storage=f"sqlite:///{tmp_path / 'ids.db'}", study_name="ids", n_trials=3)
    task = TaskKeys(env="e", algorithm="a", n_epochs=2, seed=0, metric="m", tracking_uri=None, experiment_name="x")
    space = parse_search_space({"x": "choice(1, 2)"}, [])
    other = optuna.create_study(storage=settings.storage, study_name="other")  # ids and numbers now differ
    other.ask()
    study = SweepStudy(SweepPlan(settings, task, space, {}))
    try:
        trials = [study.ask(0) for _ in range(3)]
        assert study.ask(0) is None  # n_trials=3 used up
        for trial in trials:
            assert trial is not None
            trial_id = study.trial_id(trial)
            assert study.storage.get_trial(trial_id).number == trial.number != trial_id
            link = TrialLink(study.url, "ids", trial_id, "m", "none", learned_cap=True)
            study.study.set_user_attr(EPOCH_CAP_ATTR, 1)
            (hook,) = epoch_hooks(link.to_environ())
            assert hook(1, {"m": 0.5})  # the trial's process marks it capped, the sweep sees that
            assert study.user_attrs(trial) == {CAPPED_AT_ATTR: 1}
    finally:
        study.close()


def test_search_space_parsing() -> None:
    space = parse_search_space(
        {
            "algorithm.learner.learning_rate": "tag(log, interval(0.0001, 0.003))",
            "algorithm.learner.batch_size": "choice(128, 256, 512)",
            "algorithm.n_sampled_goal": "range(2, 8)",
            "algorithm.learner.gamma": "range(0.9, 1.0, 0.05)",
            "algorithm.learner.tau": "0.01",
        },
        ["+env_kwargs.n_bits=tag(int, interval(2, 6))", "env=BitFlipping-v0", "algorithm.learner.tau=0.02"],
    )
    assert space.distributions["algorithm.learner.learning_rate"] == FloatDistribution(0.0001, 0.003, log=True)
    assert space.distributions["algorithm.learner.batch_size"] == CategoricalDistribution([128, 256, 512])
    assert space.distributions["algorithm.n_sampled_goal"] == IntDistribution(2, 7)
    assert space.distributions["env_kwargs.n_bits"] == IntDistribution(2, 6)
    gamma = space.distributions["algorithm.learner.gamma"]
    assert gamma == FloatDistribution(0.9, 0.95, step=0.05)
    assert space.fixed == ["algorithm.learner.tau=0.01", "env=BitFlipping-v0", "algorithm.learner.tau=0.02"]
    overrides = space.overrides({"env_kwargs.n_bits": 3, "algorithm.learner.batch_size": 256})
    assert overrides[-2:] == ["+env_kwargs.n_bits=3", "algorithm.learner.batch_size=256"]
    assert parse_search_space({"x": "choice(a, '1')"}, []).overrides({"x": "1"}) == ["x='1'"]
    grid = parse_search_space({"k": "range(2, 8)", "g": "range(0.9, 1.0, 0.05)", "c": "choice(a, b)"}, [])
    assert grid.grid("search_space") == {"k": [2, 3, 4, 5, 6, 7], "g": [0.9, 0.95], "c": ["a", "b"]}


@pytest.mark.parametrize(
    ("entries", "cli", "key"),
    [
        ({"a.b": "tag(log, interval(-1, 1))"}, [], "search_space.a.b"),
        ({"a.b": "interval(2, 1)"}, [], "search_space.a.b"),
        ({"a.b": "choice(1, 1)"}, [], "search_space.a.b"),
        ({"a.b": "tag(fancy, choice(1, 2))"}, [], "search_space.a.b"),
        ({"a.b": "choice((("}, [], "search_space.a.b"),
        ({}, ["c=range(5, 1)"], "c"),
    ],
)
def test_bad_search_space_entries_name_their_key(entries: dict, cli: list, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_search_space(entries, cli)
    assert error.value.key == key


def test_grid_needs_discrete_entries() -> None:
    with pytest.raises(ConfigError, match="search_space.lr"):
        parse_search_space({"lr": "interval(0.1, 0.2)"}, []).grid("search_space")


def test_bad_search_space_exits_2_with_one_line_before_any_trial(tmp_path: Path) -> None:
    result = _sweep(tmp_path, "algorithm.learner.learning_rate=tag(log, interval(-1, 1))")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "error: algorithm.learner.learning_rate: a log scale needs values > 0"
    ]
    assert not (tmp_path / "sweep").exists()


def test_epoch_hooks_are_empty_outside_a_sweep() -> None:
    assert epoch_hooks({}) == []


def _study_with_good_curves(tmp_path: Path) -> tuple[str, optuna.Study]:
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for _ in range(3):
        study.add_trial(
            optuna.trial.create_trial(
                value=1.8, intermediate_values={1: 0.6, 2: 0.9, 3: 1.0}, state=optuna.trial.TrialState.COMPLETE
            )
        )
    return storage, study


def test_a_trial_fed_a_bad_curve_is_pruned(tmp_path: Path) -> None:
    storage, study = _study_with_good_curves(tmp_path)
    kwargs = {"n_startup_trials": 2, "n_warmup_steps": 2}  # epoch 1 is warm-up
    good, bad = study.ask(), study.ask()
    for trial, curve in ((good, [0.5, 0.9, 1.0]), (bad, [0.0, 0.0, 0.0])):
        link = TrialLink(storage, "prune", _trial_id(storage, study, trial), "test/success_rate", "median", kwargs)
        (hook,) = epoch_hooks(link.to_environ())
        hook(1, {"test/success_rate": curve[0]})  # warm-up step: never pruned
        if trial is bad:
            with pytest.raises(TrialPruned, match="epoch 2"):
                hook(2, {"test/success_rate": curve[1]})
        else:
            for epoch, value in enumerate(curve[1:], start=2):
                hook(epoch, {"test/success_rate": value})
    reloaded = optuna.load_study(study_name="prune", storage=storage)
    assert reloaded.trials[good.number].intermediate_values == {1: 0.5, 2: 0.9, 3: 1.0}
    assert reloaded.trials[bad.number].intermediate_values == {1: 0.0, 2: 0.0}


def test_a_trial_that_stopped_on_success_holds_its_value_so_later_zero_curves_are_pruned(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'hold.db'}"
    study = optuna.create_study(storage=storage, study_name="hold", direction="maximize")
    complete = optuna.trial.TrialState.COMPLETE
    for _ in range(2):  # trials that never learn ran the full 10 epochs
        zeros = dict.fromkeys(range(1, 11), 0.0)
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values=zeros, state=complete))
    successes = [study.ask() for _ in range(2)]  # early-stopped on success after epoch 3
    for trial in successes:
        for epoch, value in ((1, 0.0), (2, 0.9), (3, 1.0)):
            trial.report(value, epoch)
    link_kwargs = {"n_startup_trials": 2, "n_warmup_steps": 0}

    def zero_at_epoch_6_is_pruned() -> bool:
        trial = study.ask()
        link = TrialLink(storage, "hold", _trial_id(storage, study, trial), "m", "median", link_kwargs)
        (hook,) = epoch_hooks(link.to_environ())
        try:
            hook(6, {"m": 0.0})
        except TrialPruned:
            return True
        finally:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return False

    assert not zero_at_epoch_6_is_pruned()  # epoch 6's median is over the never-learning trials only: 0
    for trial in successes:
        rdb = optuna.storages.RDBStorage(storage)
        assert hold_value_after_success(rdb, _trial_id(storage, study, trial), 10) == 7
        study.tell(trial, 1.7)
    held = optuna.load_study(study_name="hold", storage=storage).trials[successes[0].number].intermediate_values
    assert held == {1: 0.0, 2: 0.9, **dict.fromkeys(range(3, 11), 1.0)}
    assert zero_at_epoch_6_is_pruned()


def test_the_learned_epoch_cap_ends_a_running_trial_at_its_next_epoch(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'cap.db'}"
    study = optuna.create_study(storage=storage, study_name="cap", direction="maximize")
    capped, uncapped = study.ask(), study.ask()
    hooks = {}
    for trial, learned_cap in ((capped, True), (uncapped, False)):
        link = TrialLink(storage, "cap", _trial_id(storage, study, trial), "m", "none", learned_cap=learned_cap)
        (hooks[trial.number],) = epoch_hooks(link.to_environ())
    assert not hooks[capped.number](6, {"m": 0.0})  # no cap learned yet
    study.set_user_attr(EPOCH_CAP_ATTR, 5)  # meanwhile another trial early-stopped after 3 epochs
    assert hooks[capped.number](7, {"m": 0.0})
    assert not hooks[uncapped.number](7, {"m": 0.0})  # learned early stop is off for this one
    reloaded = optuna.load_study(study_name="cap", storage=storage).trials
    assert reloaded[capped.number].user_attrs == {CAPPED_AT_ATTR: 7}
    assert CAPPED_AT_ATTR not in reloaded[uncapped.number].user_attrs


def test_a_sweep_caps_a_running_trial_at_1_5x_the_epochs_of_a_trial_that_stopped_on_success(tmp_path: Path) -> None:
    result = _sweep(
        tmp_path,
        "+env_kwargs.fault=choice(always_success, never_success)",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.pruner=none",
        "n_epochs=40",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    study = _study(tmp_path)
    trials = {t.params["env_kwargs.fault"]: t for t in study.trials}
    assert trials["always_success"].user_attrs["epochs"] == [3]  # early_stop_last_n=3 epochs at success 1
    assert study.user_attrs[EPOCH_CAP_ATTR] == 5  # ceil(1.5 x 3)
    never = trials["never_success"]
    assert never.state == optuna.trial.TrialState.COMPLETE
    (epochs,) = never.user_attrs["epochs"]
    assert 5 <= epochs < 40 and never.user_attrs[CAPPED_AT_ATTR] == epochs
    assert never.user_attrs["env_steps"] == 100 * epochs


@pytest.mark.parametrize(
    ("pruner_args", "pruned_at_steps"),
    [
        ([], 100),  # optuna's default (5 finished trials first) would let it run 4 epochs
        (["+hydra.sweeper.pruner_kwargs.n_warmup_steps=2"], 200),  # pruner_kwargs from the command line reach it
    ],
)
def test_the_median_pruner_prunes_from_the_first_finished_trial_on(
    tmp_path: Path, pruner_args: list[str], pruned_at_steps: int
) -> None:
    result = _sweep(
        tmp_path,
        "+env_kwargs.fault=choice(always_success, never_success)",  # grid order: the success runs first
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.learned_early_stop=false",
        "n_epochs=4",
        *pruner_args,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = {t.params["env_kwargs.fault"]: t for t in _study(tmp_path).trials}
    assert trials["always_success"].state == optuna.trial.TrialState.COMPLETE
    never = trials["never_success"]
    assert never.state == optuna.trial.TrialState.PRUNED and never.user_attrs["env_steps"] == pruned_at_steps


@pytest.fixture(scope="module")
def fault_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One grid sweep of 6 trials, 2 at a time: 3 fine, one raising, one NaN, one killed."""
    tmp = tmp_path_factory.mktemp("faults")
    result = _sweep(
        tmp,
        f"+env_kwargs.fault=choice({FAULTS})",
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.max_failure_rate=1.0",
        "comet.mode=offline",
    )
    return tmp, result


def test_sweep_survives_raise_nan_and_kill(fault_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp, result = fault_sweep
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    trials = {t.params["env_kwargs.fault"]: t for t in _study(tmp).trials}
    assert sorted(trials) == sorted(FAULTS.split(","))
    for name in ("ok_a", "ok_b", "ok_c"):
        assert trials[name].state == optuna.trial.TrialState.COMPLETE and 0 <= trials[name].value <= 2
        assert trials[name].user_attrs["env_steps"] == 200
        assert sorted(trials[name].intermediate_values) == [1, 2]
    for name, reason in (("raise", "failing on purpose"), ("nan_success", "nan"), ("kill", "SIGKILL")):
        assert trials[name].state == optuna.trial.TrialState.FAIL
        assert reason in trials[name].user_attrs["error"]
    sweep_dir = tmp / "sweep"
    assert (sweep_dir / STOP_FILE).exists()
    results = OmegaConf.load(sweep_dir / RESULTS_FILE)
    assert results.trials == {"COMPLETE": 3, "FAIL": 3} and results.best_params["env_kwargs.fault"].startswith("ok")
    assert "workers idle" in result.stderr + result.stdout


def test_sweep_says_once_where_offline_comet_archives_are(
    fault_sweep: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp, result = fault_sweep
    archives = offline_archives(tmp / "sweep")
    assert len(archives) >= 3  # at least the three trials that finished
    output = result.stdout + result.stderr
    assert output.count("no Comet API key: each trial's Comet record stays offline") == 1


def test_sweep_records_nested_mlflow_runs(fault_sweep: tuple[Path, subprocess.CompletedProcess]) -> None:
    tmp, _ = fault_sweep
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (sweep_run,) = [r for r in runs if r.info.run_name.startswith("sweep_")]
    trial_runs = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == sweep_run.info.run_id}
    assert len(trial_runs) == 6
    states = sorted(r.data.tags["sweep/state"] for r in trial_runs.values())
    assert states == ["COMPLETE"] * 3 + ["FAIL"] * 3
    trial_ids = {r.info.run_id for r in trial_runs.values()}
    training_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in trial_ids]
    assert len(training_runs) == 6  # the killed trial's run is closed too, none is left RUNNING
    assert all(r.info.status != "RUNNING" for r in runs)


def test_resumed_study_counts_its_finished_trials_and_stops_on_the_stop_file(
    fault_sweep: tuple[Path, subprocess.CompletedProcess],
) -> None:
    tmp, first = fault_sweep
    assert first.returncode == 0
    process = _sweep(
        tmp,
        f"+env_kwargs.fault=choice({FAULTS})",
        "hydra.sweeper.sampler=random",
        "hydra.sweeper.seed=0",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.max_failure_rate=1.0",
        wait=False,
    )
    assert isinstance(process, subprocess.Popen) and process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "trials finished before" in line:
            assert "6 trials finished before, up to 20 in all" in line
            (tmp / "sweep" / STOP_FILE).unlink()
            break
    output = "".join(lines) + process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-3000:]
    assert f"{STOP_FILE} was deleted" in output
    trials = _study(tmp).trials
    assert 6 <= len(trials) <= 7  # at most the one trial that may have started before the file went
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
