"""Our Optuna sweeper for `python experiment/train.py --multirun`: pruned, asynchronous, crash-proof, resumable.

Hydra finds it by scanning the `hydra_plugins` namespace package; optuna itself is imported only when a sweep
starts (in `_impl`), not by every application start.
"""
