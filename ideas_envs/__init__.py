"""Our own goal environments; importing ideas_envs.register_envs registers them with gymnasium.

Our envs build on gymnasium-robotics, whose import registers its own ids (Fetch, mazes) and prints a notice about
Adroit v1 envs (which we do not use) to stderr; the package imports it first with that notice silenced, so that
stderr keeps only our own one-line errors.
"""

import contextlib
import io

with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics  # noqa: F401
