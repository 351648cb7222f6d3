"""Plot learning curves from an MLflow store, or a hyperparameter sweep from an Optuna study.

    python experiment/plot.py --tracking-uri sqlite:///mlflow.db --out curves.png --group-by algorithm.model_class
    python experiment/plot.py --out curves.png --env FetchReach-v4 --param n_epochs=6 --statistic mean --x wall
    python experiment/plot.py --out curves.png --group-by algorithm.model_class --label sac=HER-SAC --label td3=HER-TD3
    python experiment/plot.py --out seeds.png --group-by seed --run-name push_s0 --run-name push_s1_continued
    python experiment/plot.py --storage sqlite:///sweeps.db --study my_sweep --out sweep.png
    python experiment/plot.py --video data/<run>/videos/test_step_00006000.mp4 --out frames.png

Curves: every run that matches the filters (all runs in the store without filters) is grouped by the values of
`--group-by` keys (config params such as `algorithm.model_class`, or tags such as `algorithm`); each group is
drawn as the interquartile mean (IQM, the default) or the mean (`--statistic mean`) across its runs at every
step, with a 95% stratified-bootstrap confidence band, both computed with rliable (Agarwal et al. 2021, "Deep RL
at the Edge of the Statistical Precipice"). A run that stopped early holds its last value up to the end of its
group's longest run; a run resumed with `restore_from` is drawn once, as the whole curve it continues. Each
group's final value (the statistic over its runs' last values, with its 95% CI) is printed; for exactly two
groups, so is rliable's probability of improvement P(first > second) of the final values with its 95% CI, also
shown in the figure title. `--label GROUP=NAME` renames a group in the legend (GROUP as printed, e.g.
`hac / True / 1.5` for several keys). Both PNG and PDF are written (a frame strip of a recorded test episode
only as PNG).
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from scipy.stats import trim_mean  # noqa: E402

X_AXES = {"steps": "env steps", "wall": "wall time [s]"}
WALL_METRIC = "time/wall_seconds"
STATISTICS = ("iqm", "mean")
STATISTIC_NAMES = {"iqm": "IQM", "mean": "mean"}
MAX_GRID_POINTS = 200
# Characters per title line that fit the curve figure's width at the title's font size; longer lines wrap.
TITLE_WIDTH = 80
# Groups that reach the same values draw on top of each other; distinct markers and dashes keep each visible.
GROUP_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]


@dataclass
class RunCurve:
    """One run's metric against the x axis, and the group it belongs to."""

    run_id: str
    group: str
    x: np.ndarray
    y: np.ndarray


@dataclass
class GroupCurve:
    """A group's aggregate curve: `center` (IQM or mean over runs) and its stratified-bootstrap 95% band
    `low`..`high`; `finals` holds each run's last value."""

    label: str
    n_runs: int
    x: np.ndarray
    center: np.ndarray
    low: np.ndarray
    high: np.ndarray
    finals: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class Estimate:
    """A point estimate with its 95% confidence interval `low`..`high`."""

    point: float
    low: float
    high: float


@dataclass
class SweepData:
    """An Optuna study's finished trials: objective per trial, the best so far, and every param's values."""

    study_name: str
    direction: str
    numbers: np.ndarray
    values: np.ndarray
    best_so_far: np.ndarray
    params: dict[str, list[object]]
    log_scale: dict[str, bool]


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def mlflow_filter(
    env: str | None = None,
    algorithm: str | None = None,
    tags: Sequence[tuple[str, str]] = (),
    params: Sequence[tuple[str, str]] = (),
) -> str:
    """An MLflow search filter string for runs with these tags and params (empty string: every run)."""
    clauses = []
    tag_pairs = [*([("env", env)] if env else []), *([("algorithm", algorithm)] if algorithm else []), *tags]
    clauses += [f"tags.`{key}` = {_quote(value)}" for key, value in tag_pairs]
    clauses += [f"params.`{key}` = {_quote(value)}" for key, value in params]
    return " and ".join(clauses)


def _search_all_pages(client: Any, experiment_ids: Sequence[str], query: str) -> list[Any]:
    """Every run of `experiment_ids` that matches `query`, across MLflow's result pages."""
    runs: list[Any] = []
    page_token = None
    while experiment_ids:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=page_token)
        runs += list(page)
        page_token = page.token
        if not page_token:
            break
    return runs


def load_run_curves(
    tracking_uri: str | None,
    metric: str,
    x_axis: str,
    group_by: Sequence[str],
    experiments: Sequence[str] = (),
    filter_string: str = "",
    run_names: Sequence[str] = (),
) -> list[RunCurve]:
    """Read `metric` of every matching run (in `experiments`, or all) with the group key from params or tags.

    `run_names`, if given, keeps only the runs with one of these names (a run's name is its run directory's name),
    so hand-picked runs that no param or tag separates from others can be drawn together.

    `x_axis` is `steps` (the metric's step, env steps) or `wall` (the run's `time/wall_seconds` at that step).
    Runs without the metric are left out, and so is a run that a matching run resumed (`restored_from`): the
    resumed run holds the whole curve. An unknown experiment name raises ValueError.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    if experiments:
        found = [client.get_experiment_by_name(name) for name in experiments]
        missing = [name for name, experiment in zip(experiments, found) if experiment is None]
        if missing:
            raise ValueError(f"no MLflow experiment named {', '.join(missing)} in {tracking_uri or './mlflow.db'}")
        experiment_ids = [experiment.experiment_id for experiment in found if experiment is not None]
    else:
        experiment_ids = [experiment.experiment_id for experiment in client.search_experiments()]
    # MLflow compares run names one at a time (only run ids take a list), so each name is its own search.
    name_clauses = [f"attributes.run_name = {_quote(name)}" for name in run_names] or [""]
    queries = [
        " and ".join(clause for clause in (filter_string, name_clause) if clause) for name_clause in name_clauses
    ]
    runs = [run for query in queries for run in _search_all_pages(client, experiment_ids, query)]
    # A run resumed with restore_from logs the curve it continues, so the run it continued (started before it,
    # possibly in the same run directory) is left out.
    resumed_at: dict[str, int] = {}
    for run in runs:
        source = run.data.tags.get("restored_from")
        if source is not None:
            resumed_at[source] = max(resumed_at.get(source, 0), run.info.start_time)
    curves = []
    for run in runs:
        if resumed_at.get(run.data.tags.get("run_dir", ""), 0) > run.info.start_time:
            continue
        points = _last_value_per_step(client.get_metric_history(run.info.run_id, metric))
        if not points:
            continue
        steps = np.array(sorted(points))
        y = np.array([points[step] for step in steps])
        if x_axis == "wall":
            wall = _last_value_per_step(client.get_metric_history(run.info.run_id, WALL_METRIC))
            keep = np.array([step in wall for step in steps], dtype=bool)
            x = np.array([wall[step] for step in steps[keep]])
            y = y[keep]
        else:
            x = steps.astype(float)
        if len(x):
            group = " / ".join(run.data.params.get(key, run.data.tags.get(key, "(none)")) for key in group_by)
            curves.append(RunCurve(run.info.run_id, group, x, y))
    return curves


def _last_value_per_step(history: Sequence) -> dict[int, float]:
    """step -> value; a step logged twice (a resumed run) keeps its later value."""
    points: dict[int, float] = {}
    for metric in sorted(history, key=lambda m: m.timestamp):
        points[int(metric.step)] = float(metric.value)
    return points


def _per_step_statistic(statistic: str) -> Callable[[np.ndarray], np.ndarray]:
    """rliable's aggregate over runs and tasks, evaluated at every step of a (runs, tasks, steps) array.

    `metrics.aggregate_mean` already reduces only the runs and tasks axes. `metrics.aggregate_iqm` flattens its
    whole input, so calling it once per step inside every bootstrap resample is far too slow for a few hundred
    steps; the IQM here is the same scipy 25% trimmed mean over runs and tasks, for all steps in one call
    (tests/test_plot.py checks it against `metrics.aggregate_iqm` step by step).
    """
    from rliable import metrics

    if statistic == "mean":
        return metrics.aggregate_mean
    return lambda scores: np.asarray(trim_mean(scores.reshape(-1, scores.shape[-1]), 0.25, axis=0))


def _final_statistic(statistic: str) -> Callable[[np.ndarray], float]:
    """rliable's aggregate of a (runs, tasks) array: `metrics.aggregate_iqm` or `metrics.aggregate_mean`."""
    from rliable import metrics

    return metrics.aggregate_iqm if statistic == "iqm" else metrics.aggregate_mean


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed numpy's global generator for the block and restore the caller's state afterwards.

    rliable's stratified bootstrap draws its run indices with `np.random.choice` (its `random_state` argument does
    not reach those draws), so this is the only way to make its intervals repeatable; restoring the state keeps
    a plot from consuming random numbers of whoever called it in the same process.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _interval_estimate(
    scores: np.ndarray | tuple[np.ndarray, np.ndarray],
    func: Callable[..., np.ndarray | float],
    n_bootstrap: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """rliable's `library.get_interval_estimates` on one score array (or one pair): point, low and high."""
    from rliable import library

    with _seeded_global_rng(seed):
        points, intervals = library.get_interval_estimates({"scores": scores}, func, reps=n_bootstrap)
    interval = np.asarray(intervals["scores"]).reshape(2, -1)
    return np.atleast_1d(points["scores"]).astype(float), interval[0], interval[1]


def aggregate_curves(
    curves: Sequence[RunCurve], statistic: str = "iqm", n_bootstrap: int = 2000, seed: int = 0
) -> list[GroupCurve]:
    """Aggregate run curves per group on a shared x grid, with rliable's stratified-bootstrap 95% bands over runs.

    The grid is the union of the group's x values (or MAX_GRID_POINTS evenly spaced points if that is longer).
    Each run is interpolated linearly inside its own x range, is missing before its first point, and holds its
    last value after its last point (runs that stopped early stay where they ended). At each grid point the
    statistic (IQM or mean) is taken over the runs present there, and its band is rliable's percentile interval
    over `n_bootstrap` stratified resamples of those runs (`library.get_interval_estimates`, the way rliable
    draws sample-efficiency curves). Groups are returned sorted by label.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    per_step = _per_step_statistic(statistic)
    groups: dict[str, list[RunCurve]] = {}
    for curve in curves:
        groups.setdefault(curve.group, []).append(curve)
    result = []
    for label in sorted(groups):
        members = groups[label]
        grid = np.unique(np.concatenate([curve.x for curve in members]))
        if len(grid) > MAX_GRID_POINTS:
            grid = np.linspace(grid[0], grid[-1], MAX_GRID_POINTS)
        table = np.full((len(members), len(grid)), np.nan)
        for row, curve in enumerate(members):
            started = grid >= curve.x[0]
            table[row, started] = np.interp(grid[started], curve.x, curve.y)
        center, low, high = (np.empty(len(grid)) for _ in range(3))
        # rliable needs a full (runs, tasks, steps) array, so steps are aggregated together whenever the same
        # runs are present (all steps at once, unless some run started later than the others).
        present = ~np.isnan(table)
        for pattern in np.unique(present, axis=1).T:
            columns = np.flatnonzero((present == pattern[:, None]).all(axis=0))
            scores = table[np.ix_(pattern, columns)][:, None, :]
            center[columns], low[columns], high[columns] = _interval_estimate(scores, per_step, n_bootstrap, seed)
        finals = np.array([curve.y[-1] for curve in members])
        result.append(GroupCurve(label, len(members), grid, center, low, high, finals))
    return result


def final_estimates(
    groups: Sequence[GroupCurve], statistic: str = "iqm", n_bootstrap: int = 2000, seed: int = 0
) -> list[Estimate]:
    """Each group's statistic over its runs' final values, with rliable's stratified-bootstrap 95% CI."""
    func = _final_statistic(statistic)
    estimates = []
    for group in groups:
        point, low, high = _interval_estimate(group.finals[:, None], func, n_bootstrap, seed)
        estimates.append(Estimate(float(point[0]), float(low[0]), float(high[0])))
    return estimates


def probability_of_improvement(x: GroupCurve, y: GroupCurve, n_bootstrap: int = 2000, seed: int = 0) -> Estimate:
    """rliable's probability of improvement P(X > Y) of the two groups' final values, with its 95% CI.

    P(X > Y) is the chance that a random run of X ends above a random run of Y (ties count half): 1.0 when every
    run of X beats every run of Y, 0.5 for identical groups. The CI resamples each group's runs independently.
    """
    from rliable import metrics

    point, low, high = _interval_estimate(
        (x.finals[:, None], y.finals[:, None]), metrics.probability_of_improvement, n_bootstrap, seed
    )
    return Estimate(float(point[0]), float(low[0]), float(high[0]))


def draw_curves(
    groups: Sequence[GroupCurve],
    metric: str,
    x_axis: str,
    statistic: str,
    out: Path,
    title: str | None = None,
    note: str | None = None,
) -> Figure:
    """Draw each group's curve and band into one axes; write `out` as PNG and PDF; return the figure.

    The y label and the title name the statistic; `note` (e.g. a probability of improvement) is a last title line.
    """
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, group in enumerate(groups):
        marker, dashes = GROUP_STYLES[index % len(GROUP_STYLES)]
        markevery = max(1, len(group.x) // 20)
        (line,) = axes.plot(
            group.x,
            group.center,
            marker=marker,
            linestyle=dashes,
            markersize=5,
            markevery=markevery,
            label=f"{group.label} (n={group.n_runs})",
        )
        axes.fill_between(group.x, group.low, group.high, color=line.get_color(), alpha=0.25, linewidth=0)
    axes.set_xlabel(X_AXES[x_axis])
    name = STATISTIC_NAMES[statistic]
    axes.set_ylabel(f"{metric} ({name} over runs)")
    summary = f"{name} over runs, stratified bootstrap 95% CI (rliable)"
    lines = [
        *(title.splitlines() if title else []),
        summary if title else f"{metric}: {summary}",
        *([note] if note else []),
    ]
    axes.set_title("\n".join(textwrap.fill(line, TITLE_WIDTH) for line in lines), fontsize="medium")
    axes.grid(alpha=0.3)
    if groups:
        axes.legend()
    figure.tight_layout()
    _save(figure, out)
    return figure


def _save(figure: Figure, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix in (".png", ".pdf"):
        figure.savefig(out.with_suffix(suffix), dpi=150)


def load_sweep(storage: str, study_name: str) -> SweepData:
    """Read an Optuna study's completed trials (single objective)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
    values = np.array([trial.value for trial in trials], dtype=float)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    names = sorted({name for trial in trials for name in trial.params})
    params = {name: [trial.params.get(name) for trial in trials] for name in names}
    log_scale = {
        name: any(
            isinstance(trial.distributions.get(name), (FloatDistribution, IntDistribution))
            and trial.distributions[name].log
            for trial in trials
        )
        for name in names
    }
    return SweepData(
        study_name,
        "maximize" if maximize else "minimize",
        np.array([trial.number for trial in trials]),
        values,
        best,
        params,
        log_scale,
    )


def draw_sweep(sweep: SweepData, out: Path) -> Figure:
    """Objective per trial with the best so far, then one panel per param against the objective."""
    n_panels = 1 + len(sweep.params)
    columns = min(n_panels, 3)
    rows = math.ceil(n_panels / columns)
    figure, axes_grid = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    panels = list(axes_grid.flat)
    first = panels[0]
    first.scatter(sweep.numbers, sweep.values, s=18, label="trial")
    first.step(sweep.numbers, sweep.best_so_far, where="post", color="C3", label=f"best so far ({sweep.direction})")
    first.set_xlabel("trial")
    first.set_ylabel("objective")
    first.set_title(f"study {sweep.study_name}: {len(sweep.values)} completed trials")
    first.legend(fontsize="small")
    for axes, (name, param_values) in zip(panels[1:], sweep.params.items()):
        present = [(value, objective) for value, objective in zip(param_values, sweep.values) if value is not None]
        xs = [value if isinstance(value, (int, float)) else str(value) for value, _ in present]
        axes.scatter(xs, [objective for _, objective in present], s=18)
        if sweep.log_scale[name]:
            axes.set_xscale("log")
            axes.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short log range overlap
        axes.set_xlabel(name)
        axes.set_ylabel("objective")
    for axes in panels[n_panels:]:
        axes.set_visible(False)
    figure.tight_layout()
    _save(figure, out)
    return figure


def frame_strip(video: Path, n_frames: int) -> np.ndarray:
    """`n_frames` evenly spaced frames of a video (first and last included), side by side in one RGB image."""
    import imageio.v2 as imageio

    with imageio.get_reader(video) as reader:
        frames = [frame for frame in reader]  # list() asks the reader for a length it reports as infinite
    picks = np.linspace(0, len(frames) - 1, min(n_frames, len(frames))).round().astype(int)
    return np.concatenate([frames[i] for i in picks], axis=1)


def _key_value(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output file; .png and .pdf are both written")
    source = parser.add_argument_group("learning curves from MLflow")
    source.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLflow's ./mlflow.db)")
    source.add_argument("--metric", default="test/success_rate")
    source.add_argument("--x", choices=sorted(X_AXES), default="steps", help="env steps or wall time")
    source.add_argument("--group-by", default="algorithm", help="comma-separated param or tag keys")
    source.add_argument(
        "--statistic",
        choices=STATISTICS,
        default="iqm",
        help="across runs of a group: interquartile mean (default) or mean, with rliable's stratified bootstrap CI",
    )
    source.add_argument("--title", help="figure title (default: the metric)")
    source.add_argument(
        "--label", type=_key_value, action="append", default=[], help="GROUP=NAME: legend name of a group (repeatable)"
    )
    source.add_argument("--experiment", action="append", default=[], help="MLflow experiment (repeatable)")
    source.add_argument("--env", help="only runs with this env tag")
    source.add_argument("--algorithm", help="only runs with this algorithm tag")
    source.add_argument("--tag", type=_key_value, action="append", default=[], help="KEY=VALUE (repeatable)")
    source.add_argument("--param", type=_key_value, action="append", default=[], help="KEY=VALUE (repeatable)")
    source.add_argument(
        "--run-name", action="append", default=[], help="only runs with this name, i.e. run directory (repeatable)"
    )
    sweep = parser.add_argument_group("a sweep from Optuna")
    sweep.add_argument("--storage", help="Optuna storage URL, e.g. sqlite:///sweeps.db")
    sweep.add_argument("--study", help="study name (with --storage)")
    strip = parser.add_argument_group("a frame strip of a recorded test episode")
    strip.add_argument("--video", type=Path, help="an MP4 from a run's videos/ folder")
    strip.add_argument("--frames", type=int, default=6, help="frames in the strip")
    args = parser.parse_args(argv)
    if (args.storage is None) != (args.study is None):
        parser.error("--storage and --study go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.video is not None:
        import imageio.v2 as imageio

        args.out.parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(args.out.with_suffix(".png"), frame_strip(args.video, args.frames))
        print(f"wrote {args.out.with_suffix('.png')}")
        return 0
    if args.study is not None:
        sweep = load_sweep(args.storage, args.study)
        if not len(sweep.values):
            print(f"error: study {args.study} has no completed trial", file=sys.stderr)
            return 2
        draw_sweep(sweep, args.out)
    else:
        group_by = [key.strip() for key in args.group_by.split(",") if key.strip()]
        filter_string = mlflow_filter(args.env, args.algorithm, args.tag, args.param)
        try:
            curves = load_run_curves(
                args.tracking_uri, args.metric, args.x, group_by, args.experiment, filter_string, args.run_name
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not curves:
            print(f"error: no run with metric {args.metric} matches", file=sys.stderr)
            return 2
        groups = aggregate_curves(curves, args.statistic)
        names = dict(args.label)
        unknown = sorted(set(names) - {group.label for group in groups})
        if unknown:
            found = ", ".join(repr(group.label) for group in groups)
            print(f"error: --label: no group {unknown[0]!r} (groups: {found})", file=sys.stderr)
            return 2
        for group in groups:
            group.label = names.get(group.label, group.label)
        for group, final in zip(groups, final_estimates(groups, args.statistic)):
            print(
                f"{group.label}: {group.n_runs} runs, final {args.statistic} {final.point:.3f} "
                f"[{final.low:.3f}, {final.high:.3f}]"
            )
        note = None
        if len(groups) == 2:
            improvement = probability_of_improvement(*groups)
            comparison = (
                f"P({groups[0].label} > {groups[1].label}) = {improvement.point:.2f} "
                f"[{improvement.low:.2f}, {improvement.high:.2f}]"
            )
            print(f"probability of improvement {comparison} (95% CI, final values of the runs)")
            note = f"probability of improvement {comparison} on final values"
        draw_curves(groups, args.metric, args.x, args.statistic, args.out, args.title, note)
    print(f"wrote {args.out.with_suffix('.png')} and {args.out.with_suffix('.pdf')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
