"""TGRPO: Trajectory-wise Group Relative Policy Optimization (arXiv 2506.08440) for token-action policies.

Works with any ``gymnasium.vector.VectorEnv`` (a group = its ``num_envs`` parallel envs of one task) and any
policy implementing :class:`TokenActionPolicy`.

Example:
    >>> import tgrpo
    >>> result = tgrpo.train(envs, policy, tgrpo.TGRPOConfig(alpha1=0.3, alpha2=0.7))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from tgrpo.config import ConfigError as ConfigError
from tgrpo.config import PPOConfig as PPOConfig
from tgrpo.config import RLConfig as RLConfig
from tgrpo.config import TGRPOConfig as TGRPOConfig

# The rest is imported on first use, so that the configs (and a command line built from them) load without
# torch.
_LAZY = {
    "step_advantages": "tgrpo.advantages",
    "tgrpo_advantages": "tgrpo.advantages",
    "trajectory_advantages": "tgrpo.advantages",
    "CheckpointError": "tgrpo.checkpoint",
    "UnsafeCheckpointError": "tgrpo.checkpoint",
    "load_checkpoint": "tgrpo.checkpoint",
    "save_checkpoint": "tgrpo.checkpoint",
    "evaluate": "tgrpo.evaluation",
    "k3_kl": "tgrpo.loss",
    "tgrpo_loss": "tgrpo.loss",
    "NonFiniteError": "tgrpo.nonfinite",
    "MLPTokenPolicy": "tgrpo.policy",
    "TokenActionPolicy": "tgrpo.policy",
    "flatten_observation": "tgrpo.policy",
    "GroupRollout": "tgrpo.rollout",
    "collect_group": "tgrpo.rollout",
    "ActionTokenizer": "tgrpo.tokenizer",
    "TrainResult": "tgrpo.trainer",
    "compute_advantages": "tgrpo.trainer",
    "train": "tgrpo.trainer",
    "update_policy": "tgrpo.trainer",
}

__all__ = sorted(["ConfigError", "PPOConfig", "RLConfig", "TGRPOConfig", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tgrpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__version__ = "0.1.0"
