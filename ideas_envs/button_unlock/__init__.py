"""ButtonUnlock: press buttons to unlock a goal region (ideas_deep_rl2's ButtonUnlock ids on official MuJoCo)."""

from ideas_envs.button_unlock.button_unlock_env import ButtonUnlockEnv

__all__ = ["ButtonUnlockEnv"]
