"""Command-line checks that run before Hydra, so that every config mistake exits 2 with one line.

Hydra reports its own errors (unknown keys, unknown group options, override syntax, a missing `+`) in several
lines and exits 1. :func:`check_command_line` composes the config the way Hydra's entry point will, with Hydra's
compose API, and turns any such mistake into one line that names the key, the allowed values and, where one is
close, the value that was probably meant.
"""

from __future__ import annotations

import difflib
import sys
from argparse import Namespace
from collections.abc import Iterable, Sequence
from pathlib import Path

from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import (
    GrammarParseError,
    InterpolationKeyError,
    OmegaConfBaseException,
    UnsupportedInterpolationType,
)

from util.run_info import PROJECT_ROOT, git_short_hash

CONF_DIR = PROJECT_ROOT / "conf"
MAIN_CONFIG = "main"
# Hydra flags that print something and exit without composing the app's config.
_NON_RUN_FLAGS = ("help", "hydra_help", "info", "shell_completion", "experimental_rerun")
# Keys whose children are dotted override keys (the sweep space): the sweeper checks them itself.
_OPAQUE_KEYS = ("search_space",)


def register_resolvers() -> None:
    """Register `${git_hash:}` (used in the run directory) once per process."""
    if not OmegaConf.has_resolver("git_hash"):
        OmegaConf.register_new_resolver("git_hash", git_short_hash)


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """Each config group folder of conf/ (a folder holding `.yaml` files) and the option names it holds."""
    groups = {folder.name: sorted(path.stem for path in folder.glob("*.yaml")) for folder in sorted(conf_dir.iterdir())}
    return {name: options for name, options in groups.items() if options}


def default_groups(conf_dir: Path = CONF_DIR) -> list[str]:
    """The config groups conf/main.yaml's defaults list chooses from (set as `group=option`); the others, such
    as `tuned`, are added with `+group=option`."""
    defaults = OmegaConf.load(conf_dir / f"{MAIN_CONFIG}.yaml").get("defaults", [])
    named = {str(key) for entry in defaults if isinstance(entry, DictConfig) for key in entry.keys()}
    return sorted(named & set(config_groups(conf_dir)))


def top_level_keys(conf_dir: Path = CONF_DIR) -> list[str]:
    """The keys conf/main.yaml defines, plus the config groups its defaults list chooses from."""
    main = OmegaConf.load(conf_dir / f"{MAIN_CONFIG}.yaml")
    keys = {str(key) for key in main.keys() if key not in ("defaults", "hydra")}
    return sorted(keys | set(default_groups(conf_dir)))


def did_you_mean(word: str, candidates: Iterable[str], prefix: str = "") -> str:
    """`, did you mean <prefix>X?` for the candidate closest to `word` (difflib), or an empty string."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f", did you mean {prefix}{close[0]}?" if close else ""


def command_line_problem(args: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The one-line complaint about the first config mistake in `args` (Hydra's command line), or None.

    Checks override syntax, config group options and presets (`+tuned=<name>`), then composes the config as
    Hydra will; a key Hydra rejects is reported with the keys allowed at its level. Help-like flags, and
    `--config-path`/`--config-dir` (another config tree), are left to Hydra.
    """
    hydra_args = _hydra_arguments(args)
    if hydra_args is None:
        return None
    register_resolvers()
    overrides: list[Override] = []
    parser = OverridesParser.create()
    for text in hydra_args.overrides:
        try:
            overrides.extend(parser.parse_overrides([text]))
        except OverrideParseException as error:
            key = text.split("=", 1)[0].lstrip("+~")
            return f"{key}: cannot parse override {text!r} ({_first_line(error)}; see Hydra's override grammar)"
    multirun = bool(hydra_args.multirun)
    problem = _group_problem(overrides, conf_dir) or (None if multirun else _sweep_problem(overrides))
    if problem is not None:
        return problem
    config_name = hydra_args.config_name or MAIN_CONFIG
    try:
        cfg = _compose(conf_dir, config_name, hydra_args.overrides, multirun)
    except (HydraException, OmegaConfBaseException) as error:
        return _explain_composition_error(error, overrides, conf_dir, config_name, multirun)
    # A multirun composes without its sweep overrides: their keys are checked here.
    sweeps = [override for override in overrides if override.is_sweep_override()]
    return _key_problem(sweeps, cfg, conf_dir) or _interpolation_problem(cfg)


def check_command_line(args: Sequence[str]) -> None:
    """Exit 2 with one line on stderr if `args` hold a config mistake (see :func:`command_line_problem`)."""
    problem = command_line_problem(args)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def _hydra_arguments(args: Sequence[str]) -> Namespace | None:
    """Hydra's own parse of the command line; None when Hydra would not compose the app's config from conf/."""
    try:
        parsed = get_args_parser().parse_args(list(args))
    except SystemExit:  # argparse already printed its usage line; Hydra will do the same
        return None
    if any(getattr(parsed, flag, None) for flag in _NON_RUN_FLAGS) or parsed.config_path or parsed.config_dir:
        return None
    return parsed


def _group_problem(overrides: list[Override], conf_dir: Path) -> str | None:
    """Unknown options of conf/'s config groups, presets without `+`, and unknown top-level keys."""
    groups = config_groups(conf_dir)
    chosen_by_defaults = default_groups(conf_dir)
    keys = top_level_keys(conf_dir)
    for override in overrides:
        if override.is_hydra_override():
            continue
        key = override.key_or_group
        if key in groups and key not in chosen_by_defaults and not (override.is_add() or override.is_force_add()):
            return _preset_without_plus(override, groups[key])
        if key in groups and not override.is_sweep_override() and not override.is_delete():
            value = override.value()
            if value not in groups[key]:
                hint = did_you_mean(str(value), groups[key])
                return f"{key}: unknown option {value!r}{hint} (allowed: {', '.join(groups[key])})"
        top = key.split(".")[0]
        if not (override.is_add() or override.is_force_add()) and top not in keys:
            return f"{key}: unknown config key{did_you_mean(top, keys)} (allowed top-level keys: {', '.join(keys)})"
    return None


def _sweep_problem(overrides: list[Override]) -> str | None:
    """A sweep (`key=a,b`, `key=range(...)`) outside `--multirun`, where Hydra cannot tell what was meant."""
    for override in overrides:
        if override.is_sweep_override():
            key = override.key_or_group
            return (
                f"{key}: {override.input_line} is a sweep, which needs --multirun "
                f"(a list is written {key}=[a,b], a string with a comma {key}='a,b')"
            )
    return None


def _preset_without_plus(override: Override, presets: list[str]) -> str:
    """`tuned=X`: Hydra can only add a group that the defaults list does not name, with `+tuned=X`."""
    key, value = override.key_or_group, override.value()
    listing = f"(presets in conf/{key}/: {', '.join(presets)})"
    if value in presets:
        return f"{key}: a preset is added with a leading '+': write +{key}={value} {listing}"
    hint = did_you_mean(str(value), presets)
    return f"{key}: a preset is added with a leading '+' (+{key}=<preset>), and {value!r} is not one of them{hint} {listing}"


def _compose(conf_dir: Path, config_name: str, overrides: Sequence[str], multirun: bool) -> DictConfig:
    """The config Hydra's entry point composes for these overrides, with its `hydra` node."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        return hydra.compose_config(
            config_name,
            list(overrides),
            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN,
            from_shell=True,
            with_log_configuration=False,
        )


def _explain_composition_error(
    error: Exception, overrides: list[Override], conf_dir: Path, config_name: str, multirun: bool
) -> str:
    """One line for a composition Hydra refused: the unknown key or option if we can find it, else Hydra's
    message on one line."""
    if isinstance(error, MissingConfigException) and error.options:
        missing = error.missing_cfg_file or ""
        group, _, option = missing.rpartition("/")
        return f"{group or 'config'}: unknown option {option!r}{did_you_mean(option, error.options)} (allowed: {', '.join(error.options)})"
    group_overrides = [
        o.input_line or "" for o in overrides if _is_group_override(o, conf_dir) and not o.is_sweep_override()
    ]
    try:
        base = _compose(conf_dir, config_name, group_overrides, multirun)
    except (HydraException, OmegaConfBaseException):
        return _one_line(error)
    return _key_problem(overrides, base, conf_dir) or _one_line(error)


def _is_group_override(override: Override, conf_dir: Path) -> bool:
    key = override.key_or_group
    return "/" in key or key in config_groups(conf_dir)


def _key_problem(overrides: Iterable[Override], cfg: DictConfig, conf_dir: Path) -> str | None:
    """The first override (other than `+key` and group choices) whose dotted key is not in `cfg`."""
    for override in overrides:
        if override.is_add() or override.is_force_add() or _is_group_override(override, conf_dir):
            continue
        problem = _missing_key(override, cfg)
        if problem is not None:
            return problem
    return None


def _missing_key(override: Override, cfg: DictConfig) -> str | None:
    """Walk `override`'s dotted key down `cfg`; say where it leaves the config and what is there instead."""
    key = override.key_or_group
    parts = key.split(".")
    node: object = cfg
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if where in _OPAQUE_KEYS:
            return None
        if not isinstance(node, DictConfig):
            return f"{key}: {where} is a single value ({node!r}), it has no key {part!r}"
        if part not in node:
            if depth == 0:
                return None  # top-level keys were checked against conf/main.yaml already
            allowed = sorted(str(k) for k in node.keys())
            if not allowed:
                return f"{key}: {where} is empty; add a key with +{override.input_line}"
            source = _source_of(where, cfg)
            hint = did_you_mean(part, allowed, prefix=f"{where}.")
            return f"{key}: unknown config key{hint} (keys of {where}{source}: {', '.join(allowed)})"
        node = node[part]
    return None


def _source_of(where: str, cfg: DictConfig) -> str:
    """` in conf/<group>/<option>.yaml` for a key path inside a config group's node, else an empty string."""
    group = where.split(".")[0]
    choices = OmegaConf.select(cfg, "hydra.runtime.choices", default=None)
    if choices is None or group == "hydra" or group not in choices:
        return ""
    return f" in conf/{group}/{choices[group]}.yaml"


def _interpolation_problem(cfg: DictConfig) -> str | None:
    """A `${...}` in the app's config (not Hydra's node, resolved later by Hydra) that cannot be resolved."""
    app = OmegaConf.masked_copy(cfg, [str(key) for key in cfg.keys() if key != "hydra"])
    with open_dict(app):
        try:
            OmegaConf.to_container(app, resolve=True)
        except (InterpolationKeyError, UnsupportedInterpolationType, GrammarParseError) as error:
            key = getattr(error, "full_key", None) or "config"
            return f"{key}: {_first_line(error)}"
    return None


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def _one_line(error: BaseException) -> str:
    """Hydra's message without its search-path listing and hints, joined into one line."""
    lines = []
    for line in str(error).splitlines():
        if line.startswith(("Config search path", "\tprovider=", "Set the environment variable HYDRA_FULL_ERROR")):
            break
        if line.strip():
            lines.append(line.strip())
    cause = error.__cause__
    if cause is not None and _first_line(cause) not in lines:
        lines.append(_first_line(cause))
    return "; ".join(lines) or type(error).__name__
