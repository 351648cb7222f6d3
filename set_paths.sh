#!/usr/bin/env bash
# Source this file (`source set_paths.sh`) before rendering: it picks MuJoCo's offscreen OpenGL backend.
# EGL where an NVIDIA GPU is present, OSMesa (Debian package libosmesa6) otherwise.
# Nothing else is needed: MuJoCo ships with its Python package and has no licence key any more.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    export MUJOCO_GL=egl
else
    export MUJOCO_GL=osmesa
    export PYOPENGL_PLATFORM=osmesa
fi
