"""The reward functions: pure, batch-agnostic, and fed only by the facts of the info contract.

Every function accepts facts as scalars (one env) or as arrays of any common shape (a batch of envs,
e.g. ``(num_envs,)``), broadcasts them with NumPy, and returns arrays of that shape. Nothing is kept
between calls: the staged reward takes the per-env memory it needs as an argument and returns the
updated memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from rewards.config import RewardConfig, Stage
from rewards.contract import facts_from_info

__all__ = [
    "REWARD_MODES",
    "RewardResult",
    "StagedMemory",
    "compute_reward",
    "dense_reward",
    "sparse_reward",
    "staged_reward",
]

REWARD_MODES = ("staged", "sparse", "dense")
"""The reward modes of the wrappers: the paper's staged reward, a sparse success reward, a dense reward."""

_DEFAULT_CONFIG = RewardConfig()


@dataclass(frozen=True)
class StagedMemory:
    """What the staged reward remembers about one episode of each env.

    Attributes:
        was_lifted: bool, batch shape. The target has been grasped and lifted at some step of the episode.
        lift_basket_xy: float64, batch shape. ``target_to_basket_xy`` at the step the target was first
            lifted (NaN before): the start of the basket-approach bonus's scale.
    """

    was_lifted: np.ndarray
    lift_basket_xy: np.ndarray

    @classmethod
    def initial(cls, batch_shape: tuple[int, ...] = ()) -> StagedMemory:
        """The memory at the start of an episode, for a batch of the given shape (``()`` for one env)."""
        return cls(np.zeros(batch_shape, dtype=bool), np.full(batch_shape, np.nan))

    def replace_where(self, mask: ArrayLike, other: StagedMemory) -> StagedMemory:
        """A copy holding ``other``'s entries where ``mask`` is True (all arrays broadcast together)."""
        mask = np.asarray(mask, dtype=bool)
        return StagedMemory(
            np.where(mask, other.was_lifted, self.was_lifted),
            np.where(mask, other.lift_basket_xy, self.lift_basket_xy),
        )

    def reset(self, mask: ArrayLike) -> StagedMemory:
        """A copy with the entries where ``mask`` is True set back to the start of an episode."""
        return self.replace_where(mask, StagedMemory.initial())


class RewardResult(NamedTuple):
    """What a reward function returns: ``reward, stage, memory, terms = result``.

    Attributes:
        reward: float64, batch shape. The reward of the step.
        stage: int64, batch shape. The stage 0-4 of the step (see :class:`rewards.Stage`).
        memory: The memory to pass to the next step of the same episodes.
        terms: Named float64 arrays, batch shape, that sum to ``reward``.
    """

    reward: np.ndarray
    stage: np.ndarray
    memory: StagedMemory
    terms: dict[str, np.ndarray]


def staged_reward(
    facts: Mapping[str, ArrayLike],
    memory: StagedMemory | None = None,
    config: RewardConfig = _DEFAULT_CONFIG,
) -> RewardResult:
    """The paper's multi-stage pick-and-place-in-basket reward (Algorithm 2).

    With ``d = eef_to_target``, ``lifted = target_lift >= lift_height``, and ``was_lifted`` true from the
    first step where the target is both ``target_grasped`` and lifted to the end of the episode:

    ======  ===================================================================================  ===========
    stage   condition (first that holds)                                                         reward
    ======  ===================================================================================  ===========
    4       ``is_success``                                                                       16
    3       ``was_lifted`` and the target is grasped, lifted or ``target_in_basket``             8 + bonus
    2       ``d < grasp_distance``                                                               4
    1       ``d < approach_distance``                                                            2
    0       otherwise                                                                            -2
    ======  ===================================================================================  ===========

    So once lifted, the target stays in stage 3 until success, unless it is *dropped*: ``was_lifted``
    while neither grasped, lifted, in the basket, nor a success. A drop step's reward is ``drop_reward``
    (-4) in place of the stage's value, and its stage is the one its distance gives (0-2). Stage 3 adds a
    bonus growing linearly with the progress toward the basket (0 at the horizontal distance the target
    had when first lifted, ``basket_approach_bonus`` at ``basket_above_radius``), and
    ``basket_above_bonus`` while ``target_to_basket_xy <= basket_above_radius``. Values are those of the
    default :class:`RewardConfig`.

    Args:
        facts: The keys of :data:`rewards.INFO_KEYS`; scalars or arrays of one batch shape ``B``.
        memory: The memory returned by the previous step of the same episodes, or None at an episode's
            first step.
        config: Thresholds and values.

    Returns:
        ``RewardResult(reward, stage, memory, terms)``, arrays of shape ``B``. ``terms`` has
        ``stage_value`` (the stage's value, 0 on a drop), ``basket_approach``, ``basket_above`` and
        ``drop`` (``drop_reward`` on a drop, else 0); they sum to ``reward``.

    Raises:
        MissingInfoKeysError: If ``facts`` lacks a key.

    Example:
        >>> from rewards import staged_reward
        >>> facts = dict(is_success=False, target_grasped=True, target_lift=0.1, target_in_basket=False,
        ...              eef_to_target=0.01, target_to_basket_xy=0.4)
        >>> reward, stage, memory, terms = staged_reward(facts)
        >>> float(reward), int(stage), bool(memory.was_lifted)
        (8.0, 3, True)
        >>> reward, stage, memory, terms = staged_reward({**facts, "target_grasped": False, "target_lift": 0.0},
        ...                                              memory)
        >>> float(reward), int(stage), float(terms["drop"])
        (-4.0, 2, -4.0)
    """
    f = facts_from_info(facts, config.info_keys)
    success, grasped, in_basket = f[config.success_key], f["target_grasped"], f["target_in_basket"]
    eef_to_target, basket_xy = f["eef_to_target"], f["target_to_basket_xy"]
    shape = np.broadcast_shapes(*(value.shape for value in f.values()))
    if memory is None:
        memory = StagedMemory.initial(shape)

    lifted = f["target_lift"] >= config.lift_height
    carried = grasped & lifted
    was_lifted = memory.was_lifted | carried
    lift_basket_xy = np.where(carried & ~memory.was_lifted, basket_xy, memory.lift_basket_xy)

    reach_stage = np.where(
        eef_to_target < config.grasp_distance,
        Stage.GRASPABLE,
        np.where(eef_to_target < config.approach_distance, Stage.APPROACHING, Stage.FAR),
    )
    held = was_lifted & (grasped | lifted | in_basket)
    stage = np.where(success, Stage.SUCCESS, np.where(held, Stage.LIFTED, reach_stage)).astype(np.int64)
    dropped = was_lifted & ~held & ~success

    # Progress toward the basket since the first lift: 0 there, 1 at basket_above_radius.
    span = lift_basket_xy - config.basket_above_radius
    has_span = span > 0
    progress = np.where(
        has_span, np.clip((lift_basket_xy - basket_xy) / np.where(has_span, span, 1.0), 0.0, 1.0), 1.0
    )
    is_stage3 = stage == Stage.LIFTED
    terms = {
        "stage_value": np.where(dropped, 0.0, np.asarray(config.stage_rewards)[stage]),
        "basket_approach": np.where(is_stage3, config.basket_approach_bonus * progress, 0.0),
        "basket_above": np.where(
            is_stage3 & (basket_xy <= config.basket_above_radius), config.basket_above_bonus, 0.0
        ),
        "drop": np.where(dropped, config.drop_reward, 0.0),
        "basket_disturbed": _disturbance(f, config),
    }
    reward = sum(terms.values())
    memory = StagedMemory(
        np.broadcast_to(was_lifted, shape).copy(), np.broadcast_to(lift_basket_xy, shape).copy()
    )
    return RewardResult(reward, stage, memory, terms)


def _disturbance(f: Mapping[str, np.ndarray], config: RewardConfig) -> np.ndarray:
    """``basket_disturbed_reward`` where the basket is disturbed (with ``require_placement``), else 0."""
    if not config.require_placement:
        return np.zeros(np.broadcast_shapes(*(value.shape for value in f.values())))
    return np.where(f["basket_disturbed"], config.basket_disturbed_reward, 0.0)


def sparse_reward(
    facts: Mapping[str, ArrayLike], config: RewardConfig = _DEFAULT_CONFIG
) -> tuple[np.ndarray, dict]:
    """The sparse success reward: ``success_reward`` where ``is_success`` holds, else 0.

    Args:
        facts: Must hold ``is_success`` (scalar or array of batch shape ``B``).
        config: Gives ``success_reward``.

    Returns:
        ``(reward, terms)``: float64 arrays of shape ``B``; ``terms`` is ``{"success": reward}``.

    Example:
        >>> from rewards import sparse_reward
        >>> reward, terms = sparse_reward({"is_success": [False, True]})
        >>> reward.tolist()
        [0.0, 1.0]
    """
    f = facts_from_info(facts, (config.success_key,) + (("basket_disturbed",) if config.require_placement else ()))
    success = np.where(f[config.success_key], config.success_reward, 0.0)
    terms = {"success": success, "basket_disturbed": _disturbance(f, config)}
    return terms["success"] + terms["basket_disturbed"], terms


def dense_reward(
    facts: Mapping[str, ArrayLike], config: RewardConfig = _DEFAULT_CONFIG
) -> tuple[np.ndarray, dict]:
    """A continuous reach-grasp-lift-place reward in the style of robosuite and ManiSkill.

    The shaped terms, each in [0, 1]:

    - ``reach = 1 - tanh(dense_reach_scale * eef_to_target)``
    - ``grasp = target_grasped``
    - ``lift = target_grasped * clip(target_lift / lift_height, 0, 1)``
    - ``place = (target_grasped and target_lift >= lift_height) * (1 - tanh(dense_place_scale *
      target_to_basket_xy))``

    sum to the reward; a step where ``is_success`` holds gets ``dense_success_reward`` instead (all shaped
    terms 0). Divide by ``dense_success_reward`` for a reward in [0, 1].

    Args:
        facts: The keys of :data:`rewards.INFO_KEYS`; scalars or arrays of one batch shape ``B``.
        config: Scales and values.

    Returns:
        ``(reward, terms)``: float64 arrays of shape ``B``; ``terms`` has ``reach``, ``grasp``, ``lift``,
        ``place`` and ``success``, which sum to ``reward``.

    Example:
        >>> from rewards import dense_reward
        >>> facts = dict(is_success=False, target_grasped=False, target_lift=0.0, target_in_basket=False,
        ...              eef_to_target=0.0, target_to_basket_xy=0.4)
        >>> reward, terms = dense_reward(facts)
        >>> float(reward)
        1.0
    """
    f = facts_from_info(facts, config.info_keys)
    grasped, success = f["target_grasped"], f[config.success_key]
    carried = grasped & (f["target_lift"] >= config.lift_height)
    shaped = {
        "reach": 1.0 - np.tanh(config.dense_reach_scale * f["eef_to_target"]),
        "grasp": grasped.astype(np.float64),
        "lift": grasped * np.clip(f["target_lift"] / config.lift_height, 0.0, 1.0),
        "place": carried * (1.0 - np.tanh(config.dense_place_scale * f["target_to_basket_xy"])),
    }
    terms = {name: np.where(success, 0.0, value) for name, value in shaped.items()}
    terms["success"] = np.where(success, config.dense_success_reward, 0.0)
    terms["basket_disturbed"] = _disturbance(f, config)
    reward = sum(terms.values())
    return np.asarray(reward, dtype=np.float64), terms


def compute_reward(
    facts: Mapping[str, ArrayLike],
    memory: StagedMemory | None = None,
    config: RewardConfig = _DEFAULT_CONFIG,
    mode: str = "staged",
) -> RewardResult:
    """The reward of ``mode`` with the stage and memory of the staged reward (what the wrappers use).

    Args:
        facts: The keys of :data:`rewards.INFO_KEYS`; scalars or arrays of one batch shape ``B``.
        memory: As for :func:`staged_reward`.
        config: Thresholds and values.
        mode: One of :data:`REWARD_MODES`.

    Returns:
        ``RewardResult``: the reward and terms of ``mode``; the stage and memory of the staged reward.

    Raises:
        ValueError: If ``mode`` is unknown.
    """
    check_mode(mode)
    result = staged_reward(facts, memory, config)
    if mode == "staged":
        return result
    reward, terms = sparse_reward(facts, config) if mode == "sparse" else dense_reward(facts, config)
    shape = result.stage.shape
    terms = {name: np.broadcast_to(value, shape) for name, value in terms.items()}
    return RewardResult(np.broadcast_to(reward, shape), result.stage, result.memory, terms)


def check_mode(mode: str) -> None:
    """Raise ValueError if ``mode`` is not one of :data:`REWARD_MODES`."""
    if mode not in REWARD_MODES:
        raise ValueError(f"Unknown reward mode {mode!r}: choose one of {list(REWARD_MODES)}.")
