"""Registers every env of ideas_envs with gymnasium; imported by the env factory so `env=<id>` just works."""

from __future__ import annotations

import gymnasium as gym


def register_all() -> None:
    """Register our env ids (idempotent: an id already in the registry is left alone)."""
    if "BitFlipping-v0" not in gym.registry:
        gym.register(
            id="BitFlipping-v0",
            entry_point="ideas_envs.bit_flipping.bit_flipping_env:BitFlippingEnv",
            max_episode_steps=10,
            kwargs={"n_bits": 10},
        )


register_all()
