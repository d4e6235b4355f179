"""TGRPO: Trajectory-wise Group Relative Policy Optimization (arXiv 2506.08440) for token-action policies.

Works with any ``gymnasium.vector.VectorEnv`` (a group = its ``num_envs`` parallel envs of one task) and any
policy implementing :class:`TokenActionPolicy`.

Example:
    >>> import tgrpo
    >>> result = tgrpo.train(envs, policy, tgrpo.TGRPOConfig(alpha1=0.3, alpha2=0.7))  # doctest: +SKIP
"""

from tgrpo.advantages import step_advantages, tgrpo_advantages, trajectory_advantages
from tgrpo.checkpoint import load_checkpoint, save_checkpoint
from tgrpo.config import ConfigError, RLConfig, TGRPOConfig
from tgrpo.evaluation import evaluate
from tgrpo.loss import k3_kl, tgrpo_loss
from tgrpo.policy import MLPTokenPolicy, TokenActionPolicy, flatten_observation
from tgrpo.rollout import GroupRollout, collect_group
from tgrpo.tokenizer import ActionTokenizer
from tgrpo.trainer import TrainResult, compute_advantages, train, update_policy

__all__ = [
    "ActionTokenizer",
    "ConfigError",
    "GroupRollout",
    "MLPTokenPolicy",
    "RLConfig",
    "TGRPOConfig",
    "TokenActionPolicy",
    "TrainResult",
    "collect_group",
    "compute_advantages",
    "evaluate",
    "flatten_observation",
    "k3_kl",
    "load_checkpoint",
    "save_checkpoint",
    "step_advantages",
    "tgrpo_advantages",
    "tgrpo_loss",
    "train",
    "trajectory_advantages",
    "update_policy",
]

__version__ = "0.1.0"
