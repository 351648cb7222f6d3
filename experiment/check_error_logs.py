"""Fail when any command of a `run_testing.sh` run crashed, printing each failure's last log lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiment.testing_report import CommandOutcome, print_table, read_outcomes

TAIL_LINES = 15


def failures(outcomes: list[CommandOutcome]) -> list[CommandOutcome]:
    """Commands that exited non-zero or never recorded an exit code."""
    return [o for o in outcomes if o.returncode != 0]


def main(argv: list[str] | None = None) -> int:
    """Command line: `--commands test_cmds.json --logs <dir> [--table]`; exit 1 if anything failed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commands", type=Path, required=True)
    parser.add_argument("--logs", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="print a per-command summary table")
    args = parser.parse_args(argv)
    outcomes = read_outcomes(args.commands, args.logs)
    failed = failures(outcomes)
    for outcome in failed:
        lines = outcome.log.read_text(errors="replace").splitlines() if outcome.log.exists() else ["(no log)"]
        status = "never finished" if outcome.returncode is None else f"exit {outcome.returncode}"
        print(f"--- FAILED {outcome.name} seed {outcome.seed} ({status}), last lines of {outcome.log}:")
        print("\n".join(lines[-TAIL_LINES:]))
    if args.table:
        rows = [
            [
                o.name,
                str(o.seed),
                "ok" if o.returncode == 0 else "CRASHED",
                "-" if o.seconds is None else f"{o.seconds:.0f}",
            ]
            for o in outcomes
        ]
        print_table("function tests", ["combination", "seed", "result", "wall s"], rows)
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
