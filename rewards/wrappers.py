"""The reward wrapper for a single environment."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
from gymnasium.core import ActType, ObsType

from rewards.config import RewardConfig
from rewards.contract import facts_from_info
from rewards.functions import RewardResult, StagedMemory, check_mode, compute_reward, staged_reward

__all__ = ["ENV_REWARD_KEY", "STAGE_KEY", "TERM_PREFIX", "StagedRewardWrapper"]

STAGE_KEY = "stage"
"""Info key of the stage (0-4) of the step."""
ENV_REWARD_KEY = "env_reward"
"""Info key of the reward the wrapped environment returned."""
TERM_PREFIX = "reward/"
"""Prefix of the info keys of the reward terms, e.g. ``reward/stage_value``; the terms sum to the reward."""


def added_info(result: RewardResult) -> dict[str, Any]:
    """The stage and the reward terms of ``result``, under the info keys the wrappers add."""
    return {STAGE_KEY: result.stage, **{TERM_PREFIX + name: value for name, value in result.terms.items()}}


def check_no_collision(info: dict[str, Any], keys: list[str] | tuple[str, ...]) -> None:
    """Raise ValueError if ``info`` already holds one of the keys a reward wrapper adds."""
    taken = [key for key in keys if key in info]
    if taken:
        raise ValueError(
            f"The environment's info already holds {taken}, which the reward wrapper adds: "
            "is the environment wrapped by a reward wrapper twice?"
        )


class StagedRewardWrapper(gym.Wrapper[ObsType, ActType, ObsType, ActType], gym.utils.RecordConstructorArgs):
    """Replaces the reward of an env with the staged (or sparse, or dense) reward computed from its ``info``.

    The env must put the facts of :data:`rewards.INFO_KEYS` in the info of ``reset()`` and ``step()``
    (``libero_gym`` does; see ``docs/info_contract.md``); otherwise the first ``reset()`` raises
    :class:`rewards.MissingInfoKeysError` naming the missing keys. The per-episode memory of the staged
    reward (whether the target was lifted) is reset by ``reset()``.

    Each step's info gains ``stage`` (int, 0-4), ``env_reward`` (the env's own reward) and the reward terms
    as ``reward/<term>`` floats, which sum to the returned reward. The info of ``reset()`` gains ``stage``.

    Args:
        env: The environment.
        mode: ``"staged"`` (the paper's multi-stage reward), ``"sparse"`` (success only) or ``"dense"``
            (reach-grasp-lift-place); the stage is reported in every mode.
        config: Thresholds and values; :class:`rewards.RewardConfig` defaults if None.

    Example:
        >>> from rewards import StagedRewardWrapper
        >>> from rewards.testing import START_FACTS, FactsReplayEnv
        >>> approaching = {**START_FACTS, "eef_to_target": 0.1}
        >>> env = StagedRewardWrapper(FactsReplayEnv([approaching]))
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> reward, info["stage"], info["env_reward"], info["reward/stage_value"]
        (2.0, 1, 0.0, 2.0)
    """

    def __init__(
        self,
        env: gym.Env[ObsType, ActType],
        mode: str = "staged",
        config: RewardConfig | None = None,
    ) -> None:
        check_mode(mode)
        gym.utils.RecordConstructorArgs.__init__(self, mode=mode, config=config)
        gym.Wrapper.__init__(self, env)
        self.mode = mode
        self.config = config if config is not None else RewardConfig()
        self._memory: StagedMemory | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the env and the reward's memory; the info gains ``stage``."""
        obs, info = self.env.reset(seed=seed, options=options)
        check_no_collision(info, (STAGE_KEY,))
        result = staged_reward(
            facts_from_info(info, self.config.info_keys, where=f"The info of {self.env}.reset()"), None, self.config
        )
        self._memory = result.memory
        return obs, {**info, STAGE_KEY: int(result.stage)}

    def step(self, action: ActType) -> tuple[ObsType, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step the env and return the reward of ``mode``; the info gains the stage and the reward terms."""
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        facts = facts_from_info(info, self.config.info_keys, where=f"The info of {self.env}.step()")
        result = compute_reward(facts, self._memory, self.config, self.mode)
        self._memory = result.memory
        added = {name: float(value) for name, value in added_info(result).items()}
        added[STAGE_KEY] = int(result.stage)
        added[ENV_REWARD_KEY] = float(env_reward)
        check_no_collision(info, tuple(added))
        return obs, float(result.reward), terminated, truncated, {**info, **added}
