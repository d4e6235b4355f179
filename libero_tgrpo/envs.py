"""The vector environments of the pipeline: TGRPO training groups and benchmark evaluation.

Training: ``gym.make_vec("LiberoObject-Task{k}-v0", num_envs=M)`` (async, forkserver workers) with the
paper's staged reward (:class:`rewards.StagedRewardVectorWrapper`) and, by default, one shared training
placement per group (:class:`SharedPlacementVectorWrapper`). Training placements come from LIBERO's
samplers and are never the 50 benchmark states. Success in training means *placed*: episodes end on
``is_placed`` (the object released in an undisturbed basket) and the staged reward's top stage needs it,
with a penalty for a knocked basket (``RewardConfig(require_placement=True)``), so that a policy is never
rewarded for tipping the basket or for holding on to the object.

Evaluation: the same vector env, with LIBERO's own end of episode (its success predicate) followed by the
release check, whose sub-envs are sent to the benchmark states one after the other by
:func:`libero_tgrpo.evaluation.evaluate_benchmark`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import VectorWrapper

import libero_gym  # noqa: F401  (registers the ids; sets MUJOCO_GL before mujoco is imported)
from libero_gym import MAX_EPISODE_STEPS, get_task
from rewards import RewardConfig, StagedRewardVectorWrapper

__all__ = [
    "SharedPlacementVectorWrapper",
    "env_id",
    "make_train_envs",
    "make_eval_envs",
    "TRAIN_PLACEMENT_OFFSET",
    "TRAIN_REWARD_CONFIG",
    "TRAIN_SUCCESS_KEY",
]

TRAIN_PLACEMENT_OFFSET = 7_000_000
"""Placement seeds of TGRPO groups are ``TRAIN_PLACEMENT_OFFSET + reset seed``: away from the seeds the
demonstrations reset with, so RL trains on placements the SFT data did not contain."""


TRAIN_SUCCESS_KEY = "is_placed"
"""The fact that ends a training episode and a TGRPO group (``TGRPOConfig.success_key``)."""

TRAIN_REWARD_CONFIG = RewardConfig(require_placement=True)
"""The staged reward of training: stage 4 needs the object placed, a knocked basket costs -8 per step."""


def env_id(task: int) -> str:
    """Registered id of a task number 1-10 (``LiberoObject-Task4-v0``)."""
    return f"LiberoObject-Task{get_task(task).task_id}-v0"


class SharedPlacementVectorWrapper(VectorWrapper):
    """Resets every sub-env of a group on the same training placement.

    A ``reset(seed=s)`` without placement options becomes ``reset(seed=s, options={"placement_seed":
    offset + s})``: all M sub-envs start from one scene, so the group's relative advantages compare the
    policy's own variations on one problem (as GRPO compares answers to one prompt). Resets that name a
    placement or a benchmark state (``placement_seed``, ``init_state``, ``reset_mask``) are passed through
    unchanged; a reset without a seed draws the placement seed from the wrapper's RNG.

    Args:
        env: a LIBERO-Object vector env (its sub-envs accept the ``placement_seed`` reset option).
        offset: added to the reset seed to form the placement seed.

    Example:
        >>> envs = SharedPlacementVectorWrapper(gym.make_vec("LiberoObject-Task4-v0", num_envs=4))  # doctest: +SKIP
        >>> obs, info = envs.reset(seed=3)  # all four sub-envs show the same scene  # doctest: +SKIP
    """

    def __init__(self, env: gym.vector.VectorEnv, offset: int = TRAIN_PLACEMENT_OFFSET) -> None:
        super().__init__(env)
        self.offset = int(offset)
        self._rng = np.random.default_rng()

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all sub-envs on one placement (see the class docstring)."""
        options = dict(options or {})
        if not ({"placement_seed", "init_state", "reset_mask"} & set(options)):
            base = seed[0] if isinstance(seed, (list, tuple)) else seed
            if base is None:
                base = int(self._rng.integers(0, 2**31 - 1 - self.offset))
            else:
                self._rng = np.random.default_rng(base)
            options["placement_seed"] = self.offset + int(base)
        return self.env.reset(seed=seed, options=options)


def make_train_envs(
    task: int,
    num_envs: int,
    *,
    obs_mode: str = "state",
    shared_placement: bool = True,
    reward_mode: str = "staged",
    max_episode_steps: int = MAX_EPISODE_STEPS,
    vectorization: str = "async",
    terminate_on: str = TRAIN_SUCCESS_KEY,
    reward_config: RewardConfig = TRAIN_REWARD_CONFIG,
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """The vector env of a TGRPO group: M sub-envs of one task with the staged reward.

    Args:
        task: task number 1-10.
        num_envs: group size M (>= 2 for TGRPO).
        obs_mode: ``"state"``, ``"rgb"`` or ``"rgb_state"``.
        shared_placement: reset all sub-envs on one training placement per group.
        reward_mode: reward of :class:`rewards.StagedRewardVectorWrapper` (``"staged"``: the paper's).
        max_episode_steps: step limit of each sub-env.
        vectorization: ``"async"`` (one process per sub-env) or ``"sync"``.
        terminate_on: the fact that ends an episode (``"is_placed"``; ``"is_success"`` for LIBERO's).
        reward_config: thresholds and values of the reward (placement-aware by default).
        **env_kwargs: passed to the env (``image_size``, ...).

    Returns:
        The wrapped vector env. Scripts that use it need an ``if __name__ == "__main__":`` guard.
    """
    envs = gym.make_vec(
        env_id(task),
        num_envs=num_envs,
        vectorization=vectorization,
        obs_mode=obs_mode,
        max_episode_steps=max_episode_steps,
        terminate_on=terminate_on,
        **env_kwargs,
    )
    if shared_placement:
        envs = SharedPlacementVectorWrapper(envs)
    return StagedRewardVectorWrapper(envs, mode=reward_mode, config=reward_config)


def make_eval_envs(
    task: int,
    num_envs: int = 2,
    *,
    obs_mode: str = "state",
    max_episode_steps: int = MAX_EPISODE_STEPS,
    vectorization: str = "async",
    **env_kwargs: Any,
) -> gym.vector.VectorEnv:
    """The vector env of benchmark evaluation: episodes end at LIBERO's success, then the release check runs.

    The staged reward (LIBERO's success as stage 4) is there for the per-episode stage report.

    Args:
        task: task number 1-10.
        num_envs: parallel sub-envs (2 on a 2-core machine).
        obs_mode: observation mode the policy needs.
        max_episode_steps: step cap of an evaluation episode (280 in LIBERO-Object's protocol).
        vectorization: ``"async"`` or ``"sync"``.
        **env_kwargs: passed to the env.
    """
    return make_train_envs(task, num_envs, obs_mode=obs_mode, shared_placement=False, reward_mode="staged",
                           max_episode_steps=max_episode_steps, vectorization=vectorization,
                           terminate_on="is_success", reward_config=RewardConfig(), release_check=True,
                           **env_kwargs)
