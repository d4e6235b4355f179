"""A tiny fake environment for the algorithm tests: the right action tokens earn staged rewards.

Stage ``s`` (0-based) advances by one when ``action[STAGE_DIMS[s]] > threshold``; the reward of a step is
the stage reached after it (every step of a stage shares the same reward, as in the paper's staged reward);
reaching ``n_stages`` is a success and terminates the episode. With ``threshold=0.8`` a uniformly random
token policy advances with probability ~0.1 per step, so it rarely succeeds within 10 steps; a policy that
learns to emit high tokens for those dimensions succeeds in ``n_stages`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

import tgrpo

# Tiny networks run faster on one thread than on two contending ones.
torch.set_num_threads(1)

STAGE_DIMS = (0, 1, 6)
INSTRUCTION = "raise the first lever, then the second, then close the gripper"


class StagedTokenEnv(gym.Env):
    """Fake single env with a 7-D Box action and a Box (or Dict ``{"state"}``) observation.

    Args:
        n_stages: stages to pass for success (at most ``len(STAGE_DIMS)``).
        threshold: an action entry above this passes the current stage (> 1 makes success impossible).
        dict_obs: observations as ``{"state": Box}`` like ``libero_gym``'s state mode.
        terminate_at: terminate without success after this many steps (None: never).
        truncate_at: truncate after this many steps (None: never).
        instruction: reported in ``info["instruction"]`` and as the ``instruction`` attribute.
        success_terminates: whether a success ends the episode.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        n_stages: int = 3,
        threshold: float = 0.8,
        dict_obs: bool = False,
        terminate_at: int | None = None,
        truncate_at: int | None = None,
        instruction: str = INSTRUCTION,
        success_terminates: bool = True,
    ) -> None:
        self.n_stages = n_stages
        self.threshold = threshold
        self.dict_obs = dict_obs
        self.terminate_at = terminate_at
        self.truncate_at = truncate_at
        self.instruction = instruction
        self.success_terminates = success_terminates
        self.obs_dim = n_stages + 2
        box = spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        self.observation_space = spaces.Dict({"state": box}) if dict_obs else box
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.stage = 0
        self.t = 0
        self.episodes = 0

    def _obs(self) -> Any:
        x = np.zeros(self.obs_dim, dtype=np.float32)
        x[min(self.stage, self.n_stages)] = 1.0
        x[-1] = self.np_random.uniform(-0.1, 0.1)
        return {"state": x} if self.dict_obs else x

    def _info(self) -> dict[str, Any]:
        return {
            "is_success": self.stage >= self.n_stages,
            "instruction": self.instruction,
            "stage": self.stage,
            "episode": self.episodes,
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.stage = 0
        self.t = 0
        self.episodes += 1
        return self._obs(), self._info()

    def step(self, action: np.ndarray):
        self.t += 1
        if self.stage < self.n_stages and action[STAGE_DIMS[self.stage]] > self.threshold:
            self.stage += 1
        success = self.stage >= self.n_stages
        terminated = (success and self.success_terminates) or (
            self.terminate_at is not None and self.t >= self.terminate_at
        )
        truncated = self.truncate_at is not None and self.t >= self.truncate_at
        return self._obs(), float(self.stage), terminated, truncated, self._info()


def make_vec_env(
    num_envs: int = 8, autoreset_mode: str = "NextStep", per_env: Sequence[dict] | None = None, **kwargs: Any
) -> gym.vector.SyncVectorEnv:
    """A ``SyncVectorEnv`` of ``StagedTokenEnv``; ``per_env[i]`` overrides kwargs for sub-env i."""
    per_env = per_env or [{}] * num_envs
    fns = [lambda kw={**kwargs, **per_env[i]}: StagedTokenEnv(**kw) for i in range(num_envs)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode(autoreset_mode))


def small_config(tmp_path: Any, **overrides: Any) -> tgrpo.TGRPOConfig:
    """A quick config for tests: 10-step episodes, few iterations, files under ``tmp_path``."""
    kw: dict[str, Any] = dict(
        max_steps=10,
        iterations=3,
        output_dir=str(tmp_path / "run"),
        progress_bar=False,
        plot=False,
        log_formats=("jsonl",),
    )
    kw.update(overrides)
    return tgrpo.TGRPOConfig(**kw)
