"""LIBERO-Object manipulation tasks as Gymnasium environments.

Example:
    >>> import gymnasium as gym, libero_gym  # doctest: +SKIP
    >>> env = gym.make("LiberoObject-Task4-v0", obs_mode="state")  # doctest: +SKIP
    >>> envs = gym.make_vec("LiberoObject-Task4-v0", num_envs=8)  # doctest: +SKIP
    >>> envs = gym.make_vec("LiberoObject-Task4-v0", num_envs=64, vectorization="ray")  # doctest: +SKIP
"""

from __future__ import annotations

import os

# Headless rendering by default; a user's own MUJOCO_GL setting wins.
os.environ.setdefault("MUJOCO_GL", "egl")
if os.environ["MUJOCO_GL"] in ("egl", "osmesa"):
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import logging  # noqa: E402

from gymnasium.envs.registration import register, registry  # noqa: E402

from libero_gym.arm_start import BENCHMARK_ROBOT_INIT_NOISE  # noqa: E402
from libero_gym.env import OBS_MODES, STATE_DIM, STATE_LAYOUT, WARMUP_ACTION, LiberoObjectEnv  # noqa: E402
from libero_gym.placement import TERMINATION_KEYS, PlacementConfig  # noqa: E402
from libero_gym.ray_vector import RayVectorEnv  # noqa: E402  (imports Ray only when one is created)
from libero_gym.tasks import NUM_INIT_STATES, TASKS, ObjectTask, get_task  # noqa: E402
from libero_gym.vector import LiberoAsyncVectorEnv, WorkerError, make_vec  # noqa: E402

__all__ = [
    "BENCHMARK_ROBOT_INIT_NOISE",
    "LiberoObjectEnv",
    "LiberoAsyncVectorEnv",
    "PlacementConfig",
    "TERMINATION_KEYS",
    "RayVectorEnv",
    "WorkerError",
    "make_vec",
    "TASKS",
    "ObjectTask",
    "get_task",
    "ENV_IDS",
    "OBS_MODES",
    "STATE_DIM",
    "STATE_LAYOUT",
    "WARMUP_ACTION",
    "NUM_INIT_STATES",
    "MAX_EPISODE_STEPS",
]

__version__ = "0.1.0"

MAX_EPISODE_STEPS = 280
"""Default step limit of the registered ids (the LIBERO-Object evaluation protocol)."""

ENV_IDS = ["LiberoObject-v0"] + [f"LiberoObject-Task{i}-v0" for i in TASKS]
"""All registered ids."""


def _register() -> None:
    common = dict(
        entry_point="libero_gym.env:LiberoObjectEnv",
        vector_entry_point="libero_gym.vector:make_vec",
        max_episode_steps=MAX_EPISODE_STEPS,
        disable_env_checker=False,
    )
    if "LiberoObject-v0" not in registry:
        register(id="LiberoObject-v0", **common)
    for i in TASKS:
        env_id = f"LiberoObject-Task{i}-v0"
        if env_id not in registry:
            register(id=env_id, kwargs={"task": i}, **common)


_register()


class _DropMacroNotice(logging.Filter):
    """Drops robosuite's import-time advice to create a "private macro file" (three warnings per process).

    The file only holds robosuite's own global settings, which this package does not use: the notice is
    noise, printed once by every env worker.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "macro file" not in message and "setup_macros.py" not in message


# robosuite logs through this logger; a filter on the logger applies to every handler it adds later.
logging.getLogger("robosuite_logs").addFilter(_DropMacroNotice())
