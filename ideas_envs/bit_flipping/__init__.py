"""Bit flipping: the classic discrete-action goal env from the HER paper."""

from ideas_envs.bit_flipping.bit_flipping_env import BitFlippingEnv

__all__ = ["BitFlippingEnv"]
