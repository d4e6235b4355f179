"""A tiny environment that replays given ``info`` facts, for testing rewards without a simulator."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from rewards.contract import REQUIRED_INFO_KEYS

__all__ = ["LIFT_AND_DROP", "PICK_AND_PLACE", "START_FACTS", "FactsReplayEnv", "facts"]

START_FACTS: dict[str, Any] = {
    "is_success": False,
    "target_grasped": False,
    "target_lift": 0.0,
    "target_in_basket": False,
    "eef_to_target": 0.3,
    "target_to_basket_xy": 0.4,
    "is_placed": False,
    "basket_disturbed": False,
}
"""Facts of a typical first state: gripper 0.3 m from the target, target 0.4 m from the basket, basket
standing."""


def facts(**overrides: Any) -> dict[str, Any]:
    """:data:`START_FACTS` with some facts changed, e.g. ``facts(eef_to_target=0.1)``."""
    unknown = sorted(set(overrides) - set(START_FACTS))
    if unknown:
        raise ValueError(f"Unknown fact(s) {unknown}: choose among {list(START_FACTS)}.")
    return {**START_FACTS, **overrides}


_HELD = dict(eef_to_target=0.02, target_grasped=True, target_lift=0.1)

PICK_AND_PLACE: list[dict[str, Any]] = [
    facts(),  # stage 0: far
    facts(eef_to_target=0.1),  # 1: approaching
    facts(eef_to_target=0.02),  # 2: close enough to grasp
    facts(eef_to_target=0.02, target_grasped=True),  # 2: grasped, not yet lifted
    facts(**_HELD),  # 3: lifted, 0.4 m from the basket (the bonus's start)
    facts(**_HELD, target_to_basket_xy=0.23),  # 3: half way to the basket
    facts(**_HELD, target_to_basket_xy=0.03),  # 3: above the basket
    # 3: released into the basket (below the lift height, not grasped)
    facts(eef_to_target=0.02, target_lift=0.03, target_in_basket=True, target_to_basket_xy=0.01),
    # 4: success, placed (released in the standing basket)
    facts(
        is_success=True,
        is_placed=True,
        eef_to_target=0.05,
        target_lift=0.03,
        target_in_basket=True,
        target_to_basket_xy=0.01,
    ),
]
"""A successful episode: the stages are 0, 1, 2, 2, 3, 3, 3, 3, 4."""

LIFT_AND_DROP: list[dict[str, Any]] = [
    facts(),  # 0
    facts(eef_to_target=0.02),  # 2
    facts(**_HELD),  # 3
    facts(eef_to_target=0.1),  # dropped: stage 1 by distance, drop reward
    facts(eef_to_target=0.25),  # dropped: stage 0 by distance, drop reward
]
"""An episode where the target is lifted, then dropped: the stages are 0, 2, 3, 1, 0, the last two drops."""


class FactsReplayEnv(gym.Env[np.ndarray, np.ndarray]):
    """Replays the same list of info facts in every episode, whatever the actions.

    Step ``t`` (1-based) of each episode returns ``steps[t - 1]`` as its info, LIBERO's sparse reward
    (1.0 where ``is_success``, else 0.0), ``terminated`` where ``is_success``, and ``truncated`` at the
    last entry. The observation is the facts of :data:`rewards.REQUIRED_INFO_KEYS` present in the info,
    as float32 in contract order (0 for a missing key); the action space is LIBERO's 7-dim box.

    Args:
        steps: The info of each step of an episode (at least one).
        reset_facts: The info of ``reset()``; :data:`START_FACTS` if None.

    Example:
        >>> from rewards.testing import START_FACTS, FactsReplayEnv
        >>> env = FactsReplayEnv([START_FACTS, {**START_FACTS, "is_success": True}])
        >>> _ = env.reset(seed=0)
        >>> [env.step(env.action_space.sample())[1:4] for _ in range(2)]
        [(0.0, False, False), (1.0, True, False)]
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self, steps: Sequence[Mapping[str, Any]], reset_facts: Mapping[str, Any] | None = None
    ) -> None:
        if len(steps) == 0:
            raise ValueError("FactsReplayEnv needs at least one step of facts, got an empty list.")
        self.steps = [dict(facts) for facts in steps]
        self.reset_facts = dict(START_FACTS if reset_facts is None else reset_facts)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, shape=(len(REQUIRED_INFO_KEYS),), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self._t = 0

    @staticmethod
    def _obs(facts: Mapping[str, Any]) -> np.ndarray:
        return np.array([float(facts.get(key, 0.0)) for key in REQUIRED_INFO_KEYS], dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the replay from its first step."""
        super().reset(seed=seed)
        self._t = 0
        return self._obs(self.reset_facts), dict(self.reset_facts)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Return the next step's facts."""
        facts = dict(self.steps[self._t])
        self._t += 1
        success = bool(facts.get("is_success", False))
        truncated = self._t == len(self.steps) and not success
        return self._obs(facts), float(success), success, truncated, facts
