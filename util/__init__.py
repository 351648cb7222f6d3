"""Utilities that know no algorithm, env or entry point: logging, checkpoints, callbacks, run info."""
