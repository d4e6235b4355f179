"""Staged-reward wrappers for pick-and-place-in-basket tasks, usable with any RL library.

The reward lives outside the environment and reads only documented facts from ``info``
(:data:`INFO_KEYS`, see ``docs/info_contract.md``), so it works for ``libero_gym`` and for any env that
provides the same facts. Depends only on gymnasium and numpy.

- Pure functions on scalars or batches: :func:`staged_reward` (the paper's stages 0-4 with the drop
  penalty), :func:`sparse_reward`, :func:`dense_reward`, all configured by :class:`RewardConfig`.
- Wrappers: :class:`StagedRewardWrapper` (``gymnasium.Wrapper``) and its vector twin
  :class:`StagedRewardVectorWrapper`, with ``mode="staged" | "sparse" | "dense"``.
"""

from rewards.config import RewardConfig, Stage
from rewards.contract import (
    INFO_KEYS,
    PLACEMENT_INFO_KEYS,
    REQUIRED_INFO_KEYS,
    InvalidFactError,
    MissingInfoKeysError,
    check_info_keys,
)
from rewards.functions import (
    REWARD_MODES,
    RewardResult,
    StagedMemory,
    compute_reward,
    dense_reward,
    sparse_reward,
    staged_reward,
)
from rewards.vector import StagedRewardVectorWrapper
from rewards.wrappers import ENV_REWARD_KEY, STAGE_KEY, TERM_PREFIX, StagedRewardWrapper

__all__ = [
    "ENV_REWARD_KEY",
    "INFO_KEYS",
    "InvalidFactError",
    "PLACEMENT_INFO_KEYS",
    "REQUIRED_INFO_KEYS",
    "REWARD_MODES",
    "STAGE_KEY",
    "TERM_PREFIX",
    "MissingInfoKeysError",
    "RewardConfig",
    "RewardResult",
    "Stage",
    "StagedMemory",
    "StagedRewardVectorWrapper",
    "StagedRewardWrapper",
    "check_info_keys",
    "compute_reward",
    "dense_reward",
    "sparse_reward",
    "staged_reward",
]
