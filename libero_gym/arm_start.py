"""Where the arm starts: the spread of LIBERO's benchmark states, and the same spread for drawn placements.

LIBERO-Object's 50 benchmark states start the arm near robosuite's start pose with Gaussian noise on every arm
joint. LIBERO's ``ControlEnv``, which draws the training placements, turns robosuite's initialization noise off, so
every drawn placement starts the arm at exactly that pose. A policy trained and scored on drawn placements then
never sees the starts it is evaluated on. ``LiberoObjectEnv(robot_init_noise=...)`` gives drawn placements the
benchmark's spread (:data:`BENCHMARK_ROBOT_INIT_NOISE`), drawn from the placement's seed apart from the objects'
draws, so a placement's objects do not move.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["BENCHMARK_ROBOT_INIT_NOISE", "apply_arm_start_noise", "arm_start_noise", "check_robot_init_noise"]

BENCHMARK_ROBOT_INIT_NOISE = 0.02
"""Spread (rad) of the arm's start joints in the benchmark states: their offsets from robosuite's start pose have a
standard deviation of 0.016-0.023 per joint over the 50 states (0.019 pooled on Task2, 0.020 on Task10), the
Gaussian noise of robosuite's default initialization (0.02)."""

ARM_NOISE_STREAM = 0x41524D
"""Second word of the seed of the arm-noise draws, so that they never share a stream with the objects' draws."""


def check_robot_init_noise(value: Any) -> float:
    """``value`` as a float standard deviation in [0, 0.5) rad, or a ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) < 0.5:
        raise ValueError(f"robot_init_noise={value!r} is not accepted: give a standard deviation in radians, a "
                         f"float in [0, 0.5) (the benchmark states: {BENCHMARK_ROBOT_INIT_NOISE}).")
    return float(value)


def arm_start_noise(placement_seed: int, joints: int, std: float) -> np.ndarray:
    """The joint offsets of placement ``placement_seed``: the same seed, the same offsets."""
    rng = np.random.default_rng([int(placement_seed) % (2**32), ARM_NOISE_STREAM])
    return rng.normal(0.0, std, size=joints)


def apply_arm_start_noise(robot: Any, sim: Any, placement_seed: int, std: float) -> None:
    """Move a robosuite ``robot`` just reset to its start pose by :func:`arm_start_noise` and bring ``sim`` up to
    date, as restoring a benchmark state does (the controller is left as it is there)."""
    joints = np.asarray(robot._ref_joint_pos_indexes)
    start = np.asarray(robot.init_qpos, dtype=float)
    sim.data.qpos[joints] = start + arm_start_noise(placement_seed, len(joints), std)
    sim.data.qvel[np.asarray(robot._ref_joint_vel_indexes)] = 0.0
    sim.forward()
