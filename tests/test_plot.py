"""experiment/plot.py: groups, curves and rliable's bootstrap bands drawn from an MLflow store, and the sweep plot.

The store holds synthetic runs written with MlflowClient (2 model classes x 3 seeds, 5 epochs each), so the
expected curves are known exactly and the test takes seconds instead of minutes of training.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from matplotlib.collections import PolyCollection
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from rliable import library, metrics

from experiment.plot import (
    GroupCurve,
    RunCurve,
    _per_step_statistic,
    aggregate_curves,
    draw_curves,
    draw_sweep,
    final_estimates,
    frame_strip,
    load_run_curves,
    load_sweep,
    main,
    mlflow_filter,
    probability_of_improvement,
)
from util.video import write_mp4

STEPS = np.array([1000, 2000, 3000, 4000, 5000])
# model class -> seed -> success rate per epoch. td3's seeds agree exactly, so its band has no width.
CURVES = {
    "sac": {0: [0.0, 0.2, 0.6, 0.9, 1.0], 1: [0.1, 0.5, 0.8, 1.0, 1.0], 2: [0.0, 0.1, 0.3, 0.7, 0.9]},
    "td3": {seed: [0.0, 0.1, 0.2, 0.4, 0.5] for seed in range(3)},
}


def _write_run(client: MlflowClient, experiment_id: str, model_class: str, seed: int, values: list[float]) -> None:
    tags = {"env": "FetchReach-v4", "algorithm": "her"}
    run_id = client.create_run(experiment_id, tags=tags, run_name=f"{model_class}-{seed}").info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("test/success_rate", value, now, int(step)) for step, value in zip(STEPS, values)]
    metrics += [Metric("time/wall_seconds", 10.0 * (i + 1) + seed, now, int(step)) for i, step in enumerate(STEPS)]
    params = [Param("algorithm.model_class", model_class), Param("seed", str(seed))]
    client.log_batch(run_id, metrics=metrics, params=params, tags=[RunTag("run_dir", f"/tmp/{model_class}{seed}")])
    client.set_terminated(run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh MLflow store with the CURVES runs in experiment FetchReach-v4 and one unrelated run elsewhere."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('plot') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("FetchReach-v4")
    for model_class, seeds in CURVES.items():
        for seed, values in seeds.items():
            _write_run(client, experiment_id, model_class, seed, values)
    other = client.create_experiment("BitFlipping-v0")
    run_id = client.create_run(other, tags={"env": "BitFlipping-v0", "algorithm": "her"}).info.run_id
    client.log_batch(
        run_id,
        metrics=[Metric("test/success_rate", 0.5, 0, 100)],
        params=[Param("algorithm.model_class", "dqn")],
    )
    return uri


def test_plotted_groups_lines_and_bands_match_the_runs(store: str, tmp_path: Path) -> None:
    curves = load_run_curves(store, "test/success_rate", "steps", ["algorithm.model_class"], ["FetchReach-v4"])
    assert sorted(c.group for c in curves) == ["sac"] * 3 + ["td3"] * 3
    groups = aggregate_curves(curves, "mean")
    figure = draw_curves(groups, "test/success_rate", "steps", "mean", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000 and (tmp_path / "curves.pdf").exists()
    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    assert sorted(lines) == ["sac (n=3)", "td3 (n=3)"]
    bands = [c for c in axes.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    for (label, line), band in zip(lines.items(), bands):
        seeds = np.array(list(CURVES[label.split()[0]].values()))
        np.testing.assert_allclose(line.get_xdata(), STEPS)
        np.testing.assert_allclose(line.get_ydata(), seeds.mean(axis=0))
        # With 3 runs, 1/27 of the resamples repeat the lowest run (more than 2.5 %), so the 95% band of
        # the mean reaches exactly from the lowest to the highest run at every step.
        vertices = band.get_paths()[0].vertices
        for step, low, high in zip(STEPS, seeds.min(axis=0), seeds.max(axis=0)):
            at_step = vertices[np.isclose(vertices[:, 0], step), 1]
            assert at_step.min() == pytest.approx(low) and at_step.max() == pytest.approx(high)


def test_iqm_with_four_runs_ignores_the_outer_quartiles() -> None:
    x = np.array([1.0, 2.0])
    runs = [RunCurve(str(i), "g", x, np.array([v, v])) for i, v in enumerate([0.0, 0.4, 0.6, 10.0])]
    (group,) = aggregate_curves(runs, "iqm")
    np.testing.assert_allclose(group.center, [0.5, 0.5])
    assert np.all(group.low <= group.center) and np.all(group.center <= group.high)


def test_iqm_and_its_band_are_rliables_stratified_bootstrap_on_known_runs() -> None:
    # Four runs at 1, 2, 3, 4 over three steps: the IQM drops the lowest and the highest run, so it is 2.5.
    x = np.array([1.0, 2.0, 3.0])
    runs = [RunCurve(str(v), "g", x, np.full(3, float(v))) for v in (4, 1, 3, 2)]
    (group,) = aggregate_curves(runs, "iqm", n_bootstrap=500, seed=3)
    np.testing.assert_allclose(group.center, [2.5, 2.5, 2.5])
    assert np.all(group.low < 2.5) and np.all(group.high > 2.5)
    assert np.all(group.low >= 1.0) and np.all(group.high <= 4.0)
    # The same band straight from rliable: its sample-efficiency recipe, aggregate_iqm at every step, same seed.
    scores = np.array([[4.0] * 3, [1.0] * 3, [3.0] * 3, [2.0] * 3])[:, None, :]
    np.random.seed(3)
    points, intervals = library.get_interval_estimates(
        {"g": scores},
        lambda s: np.array([metrics.aggregate_iqm(s[..., step]) for step in range(s.shape[-1])]),
        reps=500,
    )
    np.testing.assert_allclose(group.center, points["g"])
    np.testing.assert_allclose(group.low, intervals["g"][0])
    np.testing.assert_allclose(group.high, intervals["g"][1])


@pytest.mark.parametrize("n_runs", [3, 4, 7])
def test_per_step_iqm_equals_rliables_aggregate_iqm_at_every_step(n_runs: int) -> None:
    scores = np.random.default_rng(n_runs).random((n_runs, 1, 9))
    expected = [metrics.aggregate_iqm(scores[..., step]) for step in range(9)]
    np.testing.assert_allclose(_per_step_statistic("iqm")(scores), expected)
    np.testing.assert_allclose(_per_step_statistic("mean")(scores), scores.mean(axis=(0, 1)))


def _group(label: str, finals: list[float]) -> GroupCurve:
    n = len(finals)
    return GroupCurve(label, n, np.array([1.0]), np.zeros(1), np.zeros(1), np.zeros(1), np.array(finals))


def test_final_values_are_aggregated_by_rliable() -> None:
    outlier = _group("g", [0.0, 1.0, 2.0, 10.0])
    iqm, mean = final_estimates([outlier], "iqm", n_bootstrap=500)[0], final_estimates([outlier], "mean")[0]
    assert iqm.point == pytest.approx(1.5) == pytest.approx(metrics.aggregate_iqm(outlier.finals[:, None]))
    assert mean.point == pytest.approx(3.25)
    for estimate in (iqm, mean):
        assert 0.0 <= estimate.low <= estimate.point <= estimate.high <= 10.0


def test_probability_of_improvement_of_final_values() -> None:
    winner, loser = _group("a", [0.9, 1.0, 0.95]), _group("b", [0.5, 0.4, 0.6, 0.5])
    always = probability_of_improvement(winner, loser, 500)
    assert (always.point, always.low, always.high) == (1.0, 1.0, 1.0)
    never = probability_of_improvement(loser, winner, 500)
    assert (never.point, never.low, never.high) == (0.0, 0.0, 0.0)
    same = probability_of_improvement(winner, _group("c", [0.9, 1.0, 0.95]), 500)
    assert same.point == 0.5 and same.low <= 0.5 <= same.high
    # Ties count half: of the 4 pairs of runs, 3 are wins and 1 (1.0 vs 1.0) a tie.
    mixed = probability_of_improvement(_group("x", [1.0, 2.0]), _group("y", [1.0, 0.0]), 50)
    assert mixed.point == pytest.approx(0.875)


def test_early_stopped_run_holds_its_last_value_and_late_start_is_missing() -> None:
    short = RunCurve("a", "g", np.array([1.0, 2.0]), np.array([0.2, 1.0]))
    late = RunCurve("b", "g", np.array([2.0, 3.0]), np.array([0.0, 0.5]))
    (group,) = aggregate_curves([short, late])
    np.testing.assert_allclose(group.x, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(group.center, [0.2, 0.5, 0.75])


def test_cli_without_filters_plots_every_run_and_filters_select(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.png"
    assert main(["--tracking-uri", store, "--out", str(out), "--group-by", "algorithm.model_class"]) == 0
    assert out.exists() and out.with_suffix(".pdf").exists()
    assert "probability of improvement" not in capsys.readouterr().out  # three groups: no pair to compare
    every = load_run_curves(store, "test/success_rate", "steps", ["algorithm.model_class"])
    assert sorted({c.group for c in every}) == ["dqn", "sac", "td3"]
    only_sac = mlflow_filter(env="FetchReach-v4", params=[("algorithm.model_class", "sac")])
    curves = load_run_curves(store, "test/success_rate", "wall", ["algorithm", "algorithm.model_class"], [], only_sac)
    assert {c.group for c in curves} == {"her / sac"} and len(curves) == 3
    assert sorted(c.x[0] for c in curves) == [10.0, 11.0, 12.0]  # wall seconds of the first epoch per seed
    assert main(["--tracking-uri", store, "--out", str(out), "--experiment", "NoSuchExperiment"]) == 2
    assert main(["--tracking-uri", store, "--out", str(out), "--metric", "no/such_metric"]) == 2


def test_run_names_select_exactly_the_named_runs_with_the_other_filters(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picked = load_run_curves(store, "test/success_rate", "steps", ["seed"], run_names=["sac-0", "td3-2", "nosuch"])
    assert sorted(c.group for c in picked) == ["0", "2"] and len(picked) == 2
    assert [list(c.y) for c in sorted(picked, key=lambda c: c.group)] == [CURVES["sac"][0], CURVES["td3"][2]]
    only_td3 = mlflow_filter(params=[("algorithm.model_class", "td3")])
    anded = load_run_curves(store, "test/success_rate", "steps", ["seed"], [], only_td3, ["sac-0", "td3-2"])
    assert [c.group for c in anded] == ["2"]
    out = tmp_path / "named.png"
    args = ["--tracking-uri", store, "--out", str(out), "--group-by", "seed", "--run-name", "sac-0"]
    assert main([*args, "--run-name", "sac-1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in printed if " runs, final " in line) == ["0", "1"]
    assert main([*args[:-2], "--run-name", "nosuch"]) == 2


def test_cli_labels_rename_groups_and_an_unknown_group_exits_2(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "labelled.png"
    args = ["--tracking-uri", store, "--out", str(out), "--group-by", "algorithm.model_class", "--env", "FetchReach-v4"]
    assert main([*args, "--label", "sac=HER-SAC"]) == 0
    printed = capsys.readouterr().out
    assert "HER-SAC: 3 runs" in printed and "td3: 3 runs" in printed and "sac: 3 runs" not in printed
    # The default statistic is the IQM (of 3 runs: their mean). sac's seeds end at 1.0, 1.0, 0.9 and td3's all at
    # 0.5, so every sac run ends higher: probability of improvement 1 with no spread.
    lines = printed.splitlines()
    assert any(line.startswith("HER-SAC: 3 runs, final iqm 0.967 [") for line in lines)
    assert any(line.startswith("td3: 3 runs, final iqm 0.500 [0.500, 0.500]") for line in lines)
    assert "probability of improvement P(HER-SAC > td3) = 1.00 [1.00, 1.00] (95% CI, final values of the runs)" in lines
    assert main([*args, "--label", "ppo=PPO"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--label" in err[0] and "'ppo'" in err[0] and "'sac'" in err[0]


def test_figure_names_the_statistic_and_shows_the_note(store: str, tmp_path: Path) -> None:
    curves = load_run_curves(store, "test/success_rate", "steps", ["algorithm.model_class"], ["FetchReach-v4"])
    groups = aggregate_curves(curves, n_bootstrap=200)
    figure = draw_curves(groups, "test/success_rate", "steps", "iqm", tmp_path / "iqm.png", note="P(sac > td3)")
    axes = figure.axes[0]
    assert axes.get_ylabel() == "test/success_rate (IQM over runs)"
    assert "IQM over runs, stratified bootstrap 95% CI (rliable)" in axes.get_title()
    assert axes.get_title().endswith("P(sac > td3)")


def test_long_title_and_note_wrap_inside_the_figure(store: str, tmp_path: Path) -> None:
    """A probability of improvement between long group labels is one long title line; it must stay readable."""
    curves = load_run_curves(store, "test/success_rate", "steps", ["algorithm.model_class"], ["FetchReach-v4"])
    groups = aggregate_curves(curves, n_bootstrap=200)
    label = "grasped share 0.5 (the preset's setting)"
    note = f"probability of improvement P({label} > {label.replace('0.5', '0.75')}) = 0.50 [0.17, 0.83] on final values"
    figure = draw_curves(groups, "test/success_rate", "steps", "iqm", tmp_path / "long.png", "A long title " * 8, note)
    renderer = figure.canvas.get_renderer()
    title = figure.axes[0].title.get_window_extent(renderer)
    width = figure.get_window_extent(renderer).width
    assert 0 <= title.x0 and title.x1 <= width
    assert figure.axes[0].get_title().replace("\n", " ").endswith("on final values")


def test_sweep_plot_has_the_trials_and_one_panel_per_param(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    study = optuna.create_study(
        study_name="s", storage=storage, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(
        lambda t: -abs(np.log10(t.suggest_float("lr", 1e-4, 1e-2, log=True)) + 3) + t.suggest_int("k", 2, 8) / 10,
        n_trials=8,
    )
    sweep = load_sweep(storage, "s")
    assert list(sweep.numbers) == list(range(8)) and sweep.log_scale == {"k": False, "lr": True}
    np.testing.assert_allclose(sweep.best_so_far, np.maximum.accumulate(sweep.values))
    figure = draw_sweep(sweep, tmp_path / "direct.png")
    panels = [axes for axes in figure.axes if axes.get_visible()]
    assert [axes.get_xlabel() for axes in panels] == ["trial", "k", "lr"]
    np.testing.assert_allclose(panels[0].collections[0].get_offsets()[:, 1], sweep.values)
    np.testing.assert_allclose(panels[2].collections[0].get_offsets()[:, 0], sweep.params["lr"])
    assert panels[2].get_xscale() == "log"
    assert main(["--storage", storage, "--study", "s", "--out", str(tmp_path / "sweep.png")]) == 0
    assert (tmp_path / "sweep.png").exists() and (tmp_path / "sweep.pdf").exists()


def test_frame_strip_takes_evenly_spaced_frames_first_and_last_included(tmp_path: Path) -> None:
    frames = [np.full((32, 48, 3), 10 * i, dtype=np.uint8) for i in range(11)]  # brightness = 10 x frame index
    write_mp4(frames, tmp_path / "v.mp4", fps=10)
    strip = frame_strip(tmp_path / "v.mp4", 3)
    assert strip.shape == (32, 3 * 48, 3)
    brightness = [strip[:, 48 * k : 48 * (k + 1)].mean() for k in range(3)]
    np.testing.assert_allclose(brightness, [0, 50, 100], atol=4)  # frames 0, 5 and 10 (H.264 is lossy)
    assert main(["--video", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "strip.png")]) == 0
    assert (tmp_path / "strip.png").exists()
