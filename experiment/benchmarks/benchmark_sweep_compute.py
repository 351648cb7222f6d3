"""Measure what pruning and learned early stopping save a sweep: the same sweep with both on, then both off.

Each pair is one `train.py --multirun` of HER-SAC on FetchReach-v4 twice, identical (trials, n_jobs, TPE sampler
seed, search space, n_epochs, seed) except for `hydra.sweeper.pruner` (median / none) and
`hydra.sweeper.learned_early_stop` (true / false). In both, every training keeps its own early stop at test
success 0.9 (the training loop's, not the sweeper's). From each sweep's `optimization_results.yaml` it reads the
env steps summed over all trials (pruned and failed ones included), the best `hyperopt/score`, the trial states
and the workers' idle fraction, and prints a table, the ratio compute on/off per sampler seed and the medians
over seeds.

Search spaces (`--space`):
- `default`: HER's default `search_space` (conf/algorithm/her.yaml) (learning rate 1e-4..3e-3 log, batch 128/256/512, k 2..7), a
  space around known-good values, where nearly every trial learns.
- `wide`: what one searches on a new problem, before knowing the good region: learning rate 1e-5..1e-2 (log),
  batch 64..512, gamma 0.9..0.99, tau 0.001..0.1 (log), k 1..8.

One sweep uses both cores (n_jobs=2, `env_subprocess=false`: one core per trial); run nothing else beside it if
the idle figure matters. MLflow goes to a sqlite file in the work dir, which is kept for a look; the same
`--workdir` again reuses the sweeps that finished there.

    python experiment/benchmarks/benchmark_sweep_compute.py [--space wide|default] [--seeds 0 1] [--trials 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from util.run_info import PROJECT_ROOT

COMMON = [
    "env=FetchReach-v4",
    "env_subprocess=false",  # n_jobs trials fill the cores; no env process beside each
    "progress_bar=false",
    "comet.mode=off",
    "hydra.sweeper.sampler=tpe",
]
SPACES = {
    "default": [],
    "wide": [
        "~search_space",
        "algorithm.learner.learning_rate=tag(log, interval(0.00001, 0.01))",
        "algorithm.learner.batch_size=choice(64, 128, 256, 512)",
        "algorithm.learner.gamma=choice(0.9, 0.95, 0.98, 0.99)",
        "algorithm.learner.tau=tag(log, interval(0.001, 0.1))",
        "algorithm.n_sampled_goal=range(1, 9)",
    ],
}
MODES = {
    "on": ["hydra.sweeper.pruner=median", "hydra.sweeper.learned_early_stop=true"],
    "off": ["hydra.sweeper.pruner=none", "hydra.sweeper.learned_early_stop=false"],
}


@dataclass(frozen=True)
class SweepResult:
    """What one finished sweep spent and found."""

    mode: str
    seed: int
    env_steps: int
    best_value: float
    states: dict[str, int]
    idle_fraction: float
    epoch_cap: int | None
    wall_seconds: float
    command: str


def run_sweep(mode: str, seed: int, args: argparse.Namespace, workdir: Path) -> SweepResult:
    """Run one sweep to its end in its own folder and read its optimization_results.yaml.

    A folder that already holds a finished sweep's result.json (same `--workdir` again) is read, not rerun.
    """
    folder = workdir / f"{args.space}_seed{seed}_{mode}"
    if (folder / "result.json").exists():
        return SweepResult(**json.loads((folder / "result.json").read_text()))
    folder.mkdir(parents=True)
    command = [
        sys.executable, str(PROJECT_ROOT / "experiment" / "train.py"), "--multirun",
        *COMMON, *SPACES[args.space], *MODES[mode],
        f"n_epochs={args.epochs}", f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.n_jobs={args.jobs}",
        f"hydra.sweeper.seed={seed}", f"hydra.sweeper.study_name=compute_{mode}",
        f"hydra.sweep.dir={folder / 'sweep'}", f"base_logdir={folder / 'data'}",
        f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
    ]  # fmt: skip
    start = time.monotonic()
    with (folder / "sweep.log").open("w") as log:
        code = subprocess.run(command, check=False, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - start
    if code:
        raise SystemExit(f"the {mode} sweep (seed {seed}) exited {code}; see {folder / 'sweep.log'}")
    results = OmegaConf.to_container(OmegaConf.load(folder / "sweep" / "optimization_results.yaml"))
    assert isinstance(results, dict)
    result = SweepResult(
        mode=mode,
        seed=seed,
        env_steps=int(results["env_steps"]),
        best_value=float(results.get("best_value", float("nan"))),
        states=dict(results["trials"]),
        idle_fraction=float(results["worker_idle_fraction"]),
        epoch_cap=results.get("epoch_cap"),
        wall_seconds=wall,
        command=shlex.join(command),
    )
    (folder / "result.json").write_text(json.dumps(dataclasses.asdict(result)))
    return result


def print_report(results: list[SweepResult], seeds: list[int]) -> None:
    """The per-sweep table, the on/off ratios per sampler seed and their medians."""
    print("\n| sampler seed | pruning + learned early stop | trials | env steps | best hyperopt/score | epoch cap "
          "| worker idle | wall s |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for r in results:
        states = ", ".join(f"{n} {s}" for s, n in sorted(r.states.items()))
        print(
            f"| {r.seed} | {r.mode} | {states} | {r.env_steps:,} | {r.best_value:.3f} | {r.epoch_cap or '-'} "
            f"| {r.idle_fraction:.1%} | {r.wall_seconds:.0f} |"
        )
    by_key = {(r.seed, r.mode): r for r in results}
    ratios, gaps = [], []
    for seed in seeds:
        on, off = by_key[seed, "on"], by_key[seed, "off"]
        ratios.append(on.env_steps / off.env_steps)
        gaps.append(on.best_value - off.best_value)
        print(f"seed {seed}: compute on/off {ratios[-1]:.2f}, best on - off {gaps[-1]:+.3f}")
    idle = {mode: statistics.median(r.idle_fraction for r in results if r.mode == mode) for mode in MODES}
    print(
        f"medians over sampler seeds {seeds}: compute on/off {statistics.median(ratios):.2f}, best on - off "
        f"{statistics.median(gaps):+.3f}; worker idle on {idle['on']:.1%}, off {idle['off']:.1%}"
    )


def main() -> None:
    """Run the on and off sweeps for every sampler seed, one after the other, and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=sorted(SPACES), default="wide")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="TPE sampler seeds")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=30, help="n_epochs of a trial (conf/main.yaml's default)")
    parser.add_argument("--workdir", type=Path, help="default: a new folder under the system's temp dir")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-sweep-compute-"))
    print(f"work dir {workdir}")
    results = []
    for seed in args.seeds:
        for mode in ("on", "off"):
            result = run_sweep(mode, seed, args, workdir)
            print(f"{mode} seed {seed}: {result.command}", flush=True)
            results.append(result)
    print_report(results, args.seeds)


if __name__ == "__main__":
    main()
