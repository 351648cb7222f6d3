"""Reading what `run_testing.sh` left behind (commands, exit codes, times) and printing summary tables."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class CommandOutcome:
    """One executed command: its test, exit code (None if it never finished) and wall seconds."""

    index: int
    name: str
    seed: int
    run_dir: str
    returncode: int | None
    seconds: float | None
    log: Path
    bar: dict | None


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_outcomes(commands_json: Path, logs: Path) -> list[CommandOutcome]:
    """Pair each generated command with the `<i>.rc`, `<i>.time` and `<i>.log` the runner wrote for it."""
    outcomes = []
    for index, entry in enumerate(json.loads(commands_json.read_text())):
        returncode = _read_number(logs / f"{index}.rc")
        outcomes.append(
            CommandOutcome(
                index,
                entry["name"],
                entry["seed"],
                entry["run_dir"],
                None if returncode is None else int(returncode),
                _read_number(logs / f"{index}.time"),
                logs / f"{index}.log",
                entry.get("bar"),
            )
        )
    return outcomes


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """Print a summary table to stdout (wide enough for long test names)."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)
