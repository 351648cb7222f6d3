"""Facts about a run that every log needs: the code version and the flattened config."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def git_short_hash() -> str:
    """Short hash of the checked-out commit (`+dirty` if tracked files changed), or `nogit` outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"], cwd=PROJECT_ROOT, capture_output=True, check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return f"{commit}+dirty" if dirty else commit


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (`algorithm.learner.gamma`); lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
