"""Command-line checks that must happen before Hydra runs, so bad keys exit 2 with one line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from util.run_info import PROJECT_ROOT, git_short_hash

CONF_DIR = PROJECT_ROOT / "conf"


def register_resolvers() -> None:
    """Register `${git_hash:}` (used in the run directory) once per process."""
    if not OmegaConf.has_resolver("git_hash"):
        OmegaConf.register_new_resolver("git_hash", git_short_hash)


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group folder of conf/ and the option names it holds."""
    return {
        folder.name: sorted(path.stem for path in folder.glob("*.yaml"))
        for folder in sorted(conf_dir.iterdir())
        if folder.is_dir()
    }


def top_level_keys(conf_dir: Path = CONF_DIR) -> list[str]:
    """The keys conf/main.yaml defines, plus its config groups."""
    main = OmegaConf.load(conf_dir / "main.yaml")
    keys = {str(key) for key in main.keys() if key not in ("defaults", "hydra")}
    return sorted(keys | set(config_groups(conf_dir)))


def command_line_problem(args: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line complaint about an unknown top-level key or group option in `args`, or None.

    Flags (`--multirun`, `-m`, ...) and `hydra.*` / `+key` overrides are Hydra's business and pass through;
    syntax errors are left to Hydra's own parser.
    """
    overrides = [arg for arg in args if not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports its own syntax errors
        return None
    keys = top_level_keys(conf_dir)
    groups = config_groups(conf_dir)
    for override in parsed:
        if override.is_hydra_override() or override.is_add() or override.is_force_add():
            continue
        key = override.key_or_group
        top = key.split(".")[0].split("/")[0]
        if top not in keys:
            return f"{key}: unknown config key (allowed top-level keys: {', '.join(keys)})"
        if key in groups and not override.is_sweep_override() and not override.is_delete():
            value = override.value()
            if value not in groups[key]:
                return f"{key}: unknown option {value!r} (allowed: {', '.join(groups[key])})"
    return None


def check_command_line(args: Sequence[str]) -> None:
    """Exit 2 with one line on stderr if `args` name an unknown key or group option."""
    problem = command_line_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
