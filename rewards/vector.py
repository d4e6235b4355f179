"""The vector twin of :class:`rewards.StagedRewardWrapper`, for any ``gymnasium.vector.VectorEnv``."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from gymnasium.core import ActType, ObsType
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rewards.config import RewardConfig
from rewards.contract import facts_from_info
from rewards.functions import StagedMemory, check_mode, compute_reward, staged_reward
from rewards.wrappers import ENV_REWARD_KEY, STAGE_KEY, added_info, check_no_collision

__all__ = ["StagedRewardVectorWrapper"]


class StagedRewardVectorWrapper(VectorWrapper):
    """Replaces the rewards of a vector env with the staged (or sparse, or dense) reward of each sub-env.

    Gives, for each sub-env, the rewards and info values :class:`rewards.StagedRewardWrapper` gives for that
    env alone. The per-episode memory of each sub-env is reset at its episode boundaries according to the
    env's ``metadata["autoreset_mode"]`` (Gymnasium's default ``NEXT_STEP`` if absent, with a warning):

    - ``NEXT_STEP``: the step after a sub-env's episode ends is its reset step; its reward is 0, its
      reward terms are 0, and its ``stage`` is that of the new episode's first state.
    - ``SAME_STEP``: a step that ends an episode is rewarded from ``info["final_info"]`` (the final step's
      facts); the memory then restarts from the reset facts in ``info``. The stage and reward terms of the
      final step are also added to ``info["final_info"]``.
    - ``DISABLED``: ``reset(options={"reset_mask": mask})`` resets the memory of the masked sub-envs.

    Each step's info gains ``stage`` (int64 array), ``env_reward`` (the env's rewards) and the reward terms
    ``reward/<term>`` (float64 arrays that sum to the rewards), each with its all-True ``_key`` mask; those
    of a ``SAME_STEP`` step that ends an episode describe that episode's final step. ``reset()``'s info
    gains ``stage``.

    Args:
        env: The vector environment; its sub-envs provide the facts of :data:`rewards.INFO_KEYS`.
        mode: ``"staged"``, ``"sparse"`` or ``"dense"``, as for :class:`rewards.StagedRewardWrapper`.
        config: Thresholds and values; :class:`rewards.RewardConfig` defaults if None.

    Example:
        >>> import gymnasium as gym
        >>> from rewards import StagedRewardVectorWrapper
        >>> from rewards.testing import START_FACTS, FactsReplayEnv
        >>> near = {**START_FACTS, "eef_to_target": 0.01}
        >>> envs = gym.vector.SyncVectorEnv([lambda: FactsReplayEnv([START_FACTS]), lambda: FactsReplayEnv([near])])
        >>> envs = StagedRewardVectorWrapper(envs)
        >>> obs, info = envs.reset(seed=0)
        >>> obs, rewards, terminations, truncations, info = envs.step(envs.action_space.sample())
        >>> rewards.tolist(), info["stage"].tolist()
        ([-2.0, 4.0], [0, 2])
        >>> obs, rewards, terminations, truncations, info = envs.step(envs.action_space.sample())
        >>> rewards.tolist()  # both episodes ended: this is their reset step
        [0.0, 0.0]
    """

    def __init__(
        self,
        env: VectorEnv[ObsType, ActType, np.ndarray],
        mode: str = "staged",
        config: RewardConfig | None = None,
    ) -> None:
        check_mode(mode)
        super().__init__(env)
        self.mode = mode
        self.config = config if config is not None else RewardConfig()
        self.autoreset_mode = _autoreset_mode(env)
        self._memory = StagedMemory.initial((self.num_envs,))
        self._reset_next = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: sub-envs whose next step resets

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Reset the sub-envs (those of ``options["reset_mask"]`` if given) and their memory."""
        rows = np.ones(self.num_envs, dtype=bool)
        if options is not None and "reset_mask" in options:
            rows = np.asarray(options["reset_mask"], dtype=bool).copy()
        obs, infos = self.env.reset(seed=seed, options=options)
        check_no_collision(infos, (STAGE_KEY,))
        facts = facts_from_info(infos, self.config.info_keys, rows=rows, where=f"The info of {self.env}.reset()")
        start = staged_reward(facts, None, self.config)
        self._memory = self._memory.replace_where(rows, start.memory)
        self._reset_next[rows] = False
        return obs, {**infos, STAGE_KEY: np.where(rows, start.stage, 0), f"_{STAGE_KEY}": rows}

    def step(self, actions: ActType) -> tuple[ObsType, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step the sub-envs and return the rewards of ``mode``; the info gains stages and reward terms."""
        obs, env_rewards, terminations, truncations, infos = self.env.step(actions)
        all_rows = np.ones(self.num_envs, dtype=bool)
        facts = facts_from_info(infos, self.config.info_keys, rows=all_rows, where=f"The info of {self.env}.step()")
        done = np.logical_or(terminations, truncations)
        memory = self._memory
        final_info: dict[str, Any] | None = None

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            reset_step = self._reset_next
            result = compute_reward(facts, memory.reset(reset_step), self.config, self.mode)
            terms = {name: np.where(reset_step, 0.0, value) for name, value in result.terms.items()}
            result = result._replace(reward=np.where(reset_step, 0.0, result.reward), terms=terms)
            self._memory = result.memory
            self._reset_next = done.copy()
        elif self.autoreset_mode == AutoresetMode.SAME_STEP and done.any():
            final_info = infos["final_info"]
            final_facts = facts_from_info(
                final_info, self.config.info_keys, rows=done, where=f"The final_info of {self.env}.step()"
            )
            step_facts = {key: np.where(done, final_facts[key], facts[key]) for key in facts}
            result = compute_reward(step_facts, memory, self.config, self.mode)
            start = staged_reward(facts, None, self.config)
            self._memory = result.memory.replace_where(done, start.memory)
        else:
            result = compute_reward(facts, memory, self.config, self.mode)
            self._memory = result.memory

        added = {**added_info(result), ENV_REWARD_KEY: np.asarray(env_rewards, dtype=np.float64)}
        check_no_collision(infos, tuple(added))
        infos = dict(infos)
        for key, value in added.items():
            infos[key] = np.array(value)
            infos[f"_{key}"] = all_rows.copy()
        if final_info is not None:
            check_no_collision(final_info, tuple(added))
            final_info = dict(final_info)
            for key, value in added.items():
                final_info[key] = np.where(done, value, np.zeros_like(value))
                final_info[f"_{key}"] = done
            infos["final_info"] = final_info
        return obs, np.array(result.reward, dtype=np.float64), terminations, truncations, infos


def _autoreset_mode(env: VectorEnv) -> AutoresetMode:
    mode = env.metadata.get("autoreset_mode")
    if mode is None:
        warnings.warn(
            f"{env} has no metadata['autoreset_mode']: StagedRewardVectorWrapper assumes AutoresetMode.NEXT_STEP.",
            stacklevel=3,
        )
        return AutoresetMode.NEXT_STEP
    return mode if isinstance(mode, AutoresetMode) else AutoresetMode(mode)
