"""The envs that `run_testing.sh -t function` exercises, by the kind of action space they have."""

from __future__ import annotations

# Every env here must be a goal env; `kind` decides which algorithms can run on it.
CONTINUOUS = "continuous"
DISCRETE = "discrete"

TESTING_ENVS: dict[str, str] = {
    "FetchReach-v4": CONTINUOUS,
    "FetchPush-v4": CONTINUOUS,
    "FetchSlide-v4": CONTINUOUS,
    "FetchPickAndPlace-v4": CONTINUOUS,
    "HandReach-v3": CONTINUOUS,
    "PointMaze_UMaze-v3": CONTINUOUS,
    "AntMaze_UMaze-v5": CONTINUOUS,
    "Blocks-o0-gripper_above-v1": CONTINUOUS,
    "Blocks-o1-gripper_random-v1": CONTINUOUS,
    "Blocks-o2-gripper_none-v1": CONTINUOUS,
    "Hook-o1-v1": CONTINUOUS,
    "ButtonUnlock-o1-v1": CONTINUOUS,
    "ButtonUnlock-o2-v1": CONTINUOUS,
    "AntReacher-v1": CONTINUOUS,
    "Ant4Rooms-v1": CONTINUOUS,
    "BitFlipping-v0": DISCRETE,
}
