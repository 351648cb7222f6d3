"""Search space entries in Hydra override syntax -> optuna distributions, and sampled params -> overrides.

Supported per key: `choice(a, b, ...)`, `range(start, stop[, step])` (stop excluded, as in Python),
`interval(low, high)`, each optionally wrapped in `tag(log, ...)` (log scale) and, for intervals,
`tag(int, ...)` (integers). A plain value is a fixed override applied to every trial.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from util.errors import ConfigError

_KNOWN_TAGS = {"log", "int"}


@dataclass
class SearchSpace:
    """Distributions to sample per key, the override prefix (`+`, `++`) of each key, and fixed overrides."""

    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    prefixes: dict[str, str] = field(default_factory=dict)
    fixed: list[str] = field(default_factory=list)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for one trial: the fixed ones, then one `key=value` per sampled param."""
        return [*self.fixed, *(f"{self.prefixes[key]}{key}={format_value(value)}" for key, value in params.items())]

    def grid(self, where: str) -> dict[str, list[Any]]:
        """Every value of every key, for optuna's GridSampler; ConfigError if a key is continuous."""
        grid: dict[str, list[Any]] = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[key] = list(distribution.choices)
            elif isinstance(distribution, IntDistribution) and not distribution.log:
                grid[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
            elif isinstance(distribution, FloatDistribution) and distribution.step is not None:
                count = round((distribution.high - distribution.low) / distribution.step) + 1
                grid[key] = [round(distribution.low + i * distribution.step, 12) for i in range(count)]
            else:
                raise ConfigError(f"{where}.{key}", "the grid sampler needs choice(...) or range(...)")
        return grid


def format_value(value: Any) -> str:
    """A sampled value in override syntax: strings quoted (so `'1'` stays a string), the rest as literals."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _distribution(override: Override, where: str) -> BaseDistribution:
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()))
    if tags - _KNOWN_TAGS:
        raise ConfigError(where, f"unknown tag(s) {sorted(tags - _KNOWN_TAGS)}", sorted(_KNOWN_TAGS))
    log = "log" in tags
    if isinstance(sweep, ChoiceSweep):
        if tags:
            raise ConfigError(where, "choice(...) takes no tags")
        if not sweep.list:
            raise ConfigError(where, "choice() needs at least one value")
        if any(not isinstance(value, (str, int, float, bool)) and value is not None for value in sweep.list):
            raise ConfigError(where, "choice values must be plain values (no lists or dicts)")
        if len(set(map(repr, sweep.list))) != len(sweep.list):
            raise ConfigError(where, "choice values must be distinct")
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        start, stop, step = sweep.start, sweep.stop, sweep.step
        if step is None or step <= 0 or start is None or stop is None or stop <= start:
            raise ConfigError(where, "range(start, stop, step) needs start < stop and step > 0")
        count = int((stop - start) // step) + (0 if (stop - start) % step == 0 else 1)
        last = start + (count - 1) * step
        if all(isinstance(x, int) for x in (start, stop, step)):
            if log and step != 1:
                raise ConfigError(where, "tag(log, range(...)) needs step 1")
            if log and start <= 0:
                raise ConfigError(where, "a log scale needs values > 0")
            return IntDistribution(int(start), int(last), log=log, step=int(step))
        if log:
            raise ConfigError(where, "tag(log, ...) on a float range: use tag(log, interval(low, high))")
        return FloatDistribution(float(start), round(float(last), 12), step=float(step))  # no 0.9500000000000001
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low is None or high is None or not low < high:
            raise ConfigError(where, f"interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise ConfigError(where, "a log scale needs values > 0")
        if "int" in tags:
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ConfigError(where, f"unsupported sweep {override.input_line!r}", ["choice", "range", "interval", "tag"])


def parse_search_space(
    entries: Mapping[str, Any], cli_overrides: Sequence[str], source: str = "search_space"
) -> SearchSpace:
    """Parse the config's search space (key -> override expression, written at `source`) and the command line's.

    Sweeps on the command line join the space (replacing an entry of the same key); plain command-line values
    stay fixed overrides (and so pin a key the config's space sweeps). Raises ConfigError naming
    `<source>.<key>` (or the command-line key) for any entry that is not a valid sweep.
    """
    parser = OverridesParser.create()
    space = SearchSpace()
    items = [(f"{source}.{key}", f"{key}={value}") for key, value in entries.items()]
    items += [(line.split("=", 1)[0].lstrip("+~"), line) for line in cli_overrides]
    for where, line in items:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as error:  # Hydra's grammar errors carry a long multi-line message
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(where, f"cannot parse {line!r}: {first_line}") from None
        key = override.key_or_group
        if not override.is_sweep_override():  # a fixed value; a later line wins over an earlier sweep
            space.distributions.pop(key, None)
            space.fixed.append(line)
            continue
        space.distributions[key] = _distribution(override, where)
        space.prefixes[key] = "++" if override.is_force_add() else "+" if override.is_add() else ""
    return space
