"""Hook: the Fetch arm pulls an out-of-reach block with a hook (ideas_deep_rl2's Hook-o1 on official MuJoCo)."""

from ideas_envs.hook.hook_env import HookEnv

__all__ = ["HookEnv"]
