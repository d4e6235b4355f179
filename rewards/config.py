"""The one place where every threshold and value of the reward functions is declared."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from enum import IntEnum

from rewards.contract import PLACEMENT_INFO_KEYS, REQUIRED_INFO_KEYS

__all__ = ["DENSE_SHAPED_MAX", "RewardConfig", "Stage"]


class Stage(IntEnum):
    """The stages of the pick-and-place-in-basket task (the paper's Algorithm 2)."""

    FAR = 0
    """The target is not lifted and the end-effector is far from it."""
    APPROACHING = 1
    """The target is not lifted and the end-effector is approaching it."""
    GRASPABLE = 2
    """The target is not lifted and the end-effector is close enough to grasp it."""
    LIFTED = 3
    """The target has been grasped and lifted, and is since held, above the lift height, or in the basket."""
    SUCCESS = 4
    """The task's success predicate holds: the target is in the basket (placed, with
    ``RewardConfig.require_placement``)."""


DENSE_SHAPED_MAX = 4.0
"""Largest value of the dense reward's shaped part (reach + grasp + lift + place, each at most 1)."""


@dataclass(frozen=True)
class RewardConfig:
    """Thresholds and values of the staged, sparse and dense rewards.

    Distances are in metres and compared with the facts of the info contract (``docs/info_contract.md``).
    The defaults were chosen for LIBERO-Object, where the end-effector starts about 0.3 m from the
    target and the target about 0.35-0.55 m (horizontally) from the basket. A broken combination is
    rejected when the config is built, with a message saying which field to change.

    Example:
        >>> from rewards import RewardConfig
        >>> RewardConfig(lift_height=0.03).stage_rewards
        (-2.0, 2.0, 4.0, 8.0, 16.0)
        >>> RewardConfig(grasp_distance=-0.1)
        Traceback (most recent call last):
        ...
        ValueError: RewardConfig.grasp_distance must be a finite number > 0 (metres), got -0.1.
    """

    # --- staged reward: stage thresholds -------------------------------------------------------------
    approach_distance: float = 0.20
    """Stage 1 ("approaching") starts when ``eef_to_target`` falls below this distance (m); at or
    above it the step is stage 0 ("far"). Must be greater than ``grasp_distance``."""

    grasp_distance: float = 0.07
    """Stage 2 ("close enough to grasp") starts when ``eef_to_target`` falls below this distance (m).
    ``eef_to_target`` is measured to the target's body origin, which lies inside the object: a gripper
    holding a LIBERO-Object bottle is about 0.05 m from it."""

    lift_height: float = 0.04
    """The target counts as lifted when ``target_lift`` is at least this height (m) above its height
    after the reset. The first step where it is lifted while ``target_grasped`` starts stage 3 and is
    remembered ("was lifted") for the rest of the episode, for the drop penalty and the basket bonus."""

    basket_above_radius: float = 0.06
    """In stage 3 the target counts as above the basket when ``target_to_basket_xy`` is at most this
    horizontal distance (m); it then earns ``basket_above_bonus``."""

    # --- staged reward: values ----------------------------------------------------------------------
    stage_rewards: tuple[float, float, float, float, float] = (-2.0, 2.0, 4.0, 8.0, 16.0)
    """Reward of every step in stage 0, 1, 2, 3, 4 (the paper's -2, 2, 4, 8, 16). Must be strictly
    increasing, so that each stage pays more than the one before."""

    basket_approach_bonus: float = 2.0
    """Largest bonus added in stage 3 for carrying the target toward the basket: the bonus grows
    linearly from 0, at the horizontal distance the target had when it was first lifted, to this value,
    at ``basket_above_radius``. Must be >= 0."""

    basket_above_bonus: float = 2.0
    """Bonus added in stage 3 while the target is above the basket (see ``basket_above_radius``).
    Must be >= 0; stage 3's value plus both bonuses must stay below stage 4's value."""

    drop_reward: float = -4.0
    """Reward of a step where the target, after having been lifted, is neither grasped, nor lifted, nor
    in the basket (the paper's -4). It replaces the stage's value. Must be below stage 3's value, so that
    dropping never pays more than carrying."""

    # --- placement ----------------------------------------------------------------------------------
    require_placement: bool = False
    """Success means *placed*: every mode reads ``is_placed`` (the task's success, with the basket
    undisturbed and the gripper no longer touching the target) where it would read ``is_success``, so
    stage 4 needs the object let go in a standing basket; and every step where ``basket_disturbed`` holds
    adds ``basket_disturbed_reward``. The env must then also provide the facts of
    :data:`rewards.contract.PLACEMENT_INFO_KEYS` (``libero_gym`` does). Off by default so that envs with the
    six core facts keep working; the ``libero_tgrpo`` pipeline turns it on."""

    basket_disturbed_reward: float = -8.0
    """Added to the reward of every step where ``basket_disturbed`` holds (with ``require_placement``).
    Must be <= 0. The default makes a carry over a knocked basket (stage 3's 8 plus at most 4 of bonuses)
    pay at most 4, no more than reaching the object, so that knocking the basket never pays."""

    # --- sparse reward ------------------------------------------------------------------------------
    success_reward: float = 1.0
    """Sparse reward of a step where ``is_success`` holds (0 otherwise). Must be > 0."""

    # --- dense reward (robosuite / ManiSkill style reach-grasp-lift-place) ----------------------------
    dense_reach_scale: float = 10.0
    """Reach term ``1 - tanh(dense_reach_scale * eef_to_target)``; in 1/m, must be > 0."""

    dense_place_scale: float = 5.0
    """Place term ``1 - tanh(dense_place_scale * target_to_basket_xy)``, paid while the target is grasped
    and lifted; in 1/m, must be > 0."""

    dense_success_reward: float = 5.0
    """Dense reward of a step where ``is_success`` holds; it replaces the shaped terms, whose sum is at
    most 4, so it must be greater than 4."""

    @property
    def success_key(self) -> str:
        """The fact read as success: ``"is_placed"`` with ``require_placement``, else ``"is_success"``."""
        return "is_placed" if self.require_placement else "is_success"

    @property
    def info_keys(self) -> tuple[str, ...]:
        """The facts the reward functions read under this config, in a fixed order."""
        return REQUIRED_INFO_KEYS + (tuple(PLACEMENT_INFO_KEYS) if self.require_placement else ())

    def __post_init__(self) -> None:
        if not isinstance(self.require_placement, bool):
            raise ValueError(f"RewardConfig.require_placement must be True or False, got {self.require_placement!r}.")
        object.__setattr__(self, "stage_rewards", tuple(float(v) for v in self.stage_rewards))
        for name in ("approach_distance", "grasp_distance", "lift_height", "basket_above_radius"):
            _require_positive(name, getattr(self, name), "metres")
        for name in ("dense_reach_scale", "dense_place_scale"):
            _require_positive(name, getattr(self, name), "1/m")
        for field in fields(self):
            if field.name not in ("stage_rewards", "require_placement"):
                _require_finite(field.name, getattr(self, field.name))
        if self.grasp_distance >= self.approach_distance:
            raise ValueError(
                f"RewardConfig.grasp_distance ({self.grasp_distance}) must be smaller than approach_distance "
                f"({self.approach_distance}): stage 2 (close enough to grasp) lies inside stage 1 (approaching). "
                "Lower grasp_distance or raise approach_distance."
            )
        values = self.stage_rewards
        if len(values) != len(Stage):
            raise ValueError(
                f"RewardConfig.stage_rewards needs one value per stage 0-4 ({len(Stage)} values), "
                f"got {len(values)}: {values}."
            )
        for stage, value in enumerate(values):
            _require_finite(f"stage_rewards[{stage}]", value)
        for stage in range(1, len(values)):
            if values[stage] <= values[stage - 1]:
                raise ValueError(
                    f"RewardConfig.stage_rewards must be strictly increasing, got {values}: stage {stage}'s value "
                    f"({values[stage]}) is not above stage {stage - 1}'s ({values[stage - 1]}). "
                    f"Raise stage {stage}'s value or lower stage {stage - 1}'s."
                )
        for name in ("basket_approach_bonus", "basket_above_bonus"):
            if getattr(self, name) < 0:
                raise ValueError(f"RewardConfig.{name} must be >= 0, got {getattr(self, name)}.")
        best_stage3 = values[Stage.LIFTED] + self.basket_approach_bonus + self.basket_above_bonus
        if best_stage3 >= values[Stage.SUCCESS]:
            raise ValueError(
                f"RewardConfig: stage 3's value plus its basket bonuses ({values[Stage.LIFTED]} + "
                f"{self.basket_approach_bonus} + {self.basket_above_bonus} = {best_stage3}) must stay below "
                f"stage 4's value ({values[Stage.SUCCESS]}), or hovering would pay as much as success. "
                "Lower the bonuses or raise stage_rewards[4]."
            )
        if self.drop_reward >= values[Stage.LIFTED]:
            raise ValueError(
                f"RewardConfig.drop_reward ({self.drop_reward}) must be below stage 3's value "
                f"({values[Stage.LIFTED]}), or dropping the target would pay as much as carrying it."
            )
        if self.basket_disturbed_reward > 0:
            raise ValueError(
                f"RewardConfig.basket_disturbed_reward must be <= 0 (a penalty), got {self.basket_disturbed_reward}."
            )
        if self.success_reward <= 0:
            raise ValueError(f"RewardConfig.success_reward must be > 0, got {self.success_reward}.")
        if self.dense_success_reward <= DENSE_SHAPED_MAX:
            raise ValueError(
                f"RewardConfig.dense_success_reward must be greater than {DENSE_SHAPED_MAX} (the most the "
                f"shaped dense terms can sum to), got {self.dense_success_reward}."
            )


def _require_finite(name: str, value: float) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"RewardConfig.{name} must be a finite number, got {value!r}.")


def _require_positive(name: str, value: float, unit: str) -> None:
    _require_finite(name, value)
    if value <= 0:
        raise ValueError(f"RewardConfig.{name} must be a finite number > 0 ({unit}), got {value}.")
