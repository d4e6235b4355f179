"""A tiny fake camera env for the policy tests: Dict observations like ``libero_gym``'s ``rgb_state`` mode.

The images carry one bright square whose column encodes a hidden target; the reward of a step is higher the
closer ``action[0]`` is to the target, so different action tokens earn different rewards (non-zero
advantages). Never succeeds; episodes end at ``max_steps`` of the rollout.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

INSTRUCTIONS = (
    "pick up the bbq sauce and place it in the basket",
    "pick up the milk and place it in the basket",
)


class CameraEnv(gym.Env):
    """Fake env with ``{"agentview", "wrist": [S, S, 3] uint8, "state": [state_dim]}`` observations.

    Args:
        size: image side in pixels.
        state_dim: size of the state vector; 0 leaves ``"state"`` out (like ``obs_mode="rgb"``).
        instruction: reported in ``info["instruction"]``.
    """

    metadata = {"render_modes": []}

    def __init__(self, size: int = 32, state_dim: int = 5, instruction: str = INSTRUCTIONS[0]) -> None:
        self.size = size
        self.state_dim = state_dim
        self.instruction = instruction
        image = spaces.Box(0, 255, (size, size, 3), np.uint8)
        obs = {"agentview": image, "wrist": image}
        if state_dim:
            obs["state"] = spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
        self.observation_space = spaces.Dict(obs)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.target = 0.0

    def _obs(self) -> dict[str, np.ndarray]:
        img = np.zeros((self.size, self.size, 3), np.uint8)
        col = int((self.target + 1) / 2 * (self.size - 4))
        img[2:6, col : col + 4] = 255
        out = {"agentview": img, "wrist": img[::-1].copy()}
        if self.state_dim:
            out["state"] = self.np_random.normal(size=self.state_dim).astype(np.float32)
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.target = float(self.np_random.uniform(-1, 1))
        return self._obs(), {"is_success": False, "instruction": self.instruction}

    def step(self, action: np.ndarray):
        reward = -abs(float(action[0]) - self.target)
        return self._obs(), reward, False, False, {"is_success": False, "instruction": self.instruction}


def make_camera_vec_env(num_envs: int = 2, **kwargs: Any) -> gym.vector.SyncVectorEnv:
    """A ``SyncVectorEnv`` of ``CameraEnv``."""
    return gym.vector.SyncVectorEnv([lambda: CameraEnv(**kwargs) for _ in range(num_envs)])


def random_obs(batch: int = 4, size: int = 32, state_dim: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of random camera observations [B, S, S, 3] uint8 (+ state [B, state_dim])."""
    rng = np.random.default_rng(seed)
    obs = {
        "agentview": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
    }
    if state_dim:
        obs["state"] = rng.normal(size=(batch, state_dim)).astype(np.float32)
    return obs
