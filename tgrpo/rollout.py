"""Collecting a group of M trajectories from any ``gymnasium.vector.VectorEnv``.

Two modes (``mode=``):

``"paper"``
    All M sub-envs start together and the group ends at the first success in any of them (read from the
    boolean info key ``success_key``, ``info["is_success"]`` by default) or at ``max_steps``, so all trajectories have the same length L (paper §3.3).
    A sub-env that ends on its own earlier (terminated without success, or truncated) is masked from then on.
``"independent"``
    Each sub-env runs until its own termination/truncation or ``max_steps``; the group ends when all have
    ended. Trajectories have unequal lengths, described by ``mask`` [M, L].

Autoreset (Gymnasium 1.x, read from ``envs.metadata["autoreset_mode"]``): with ``NEXT_STEP`` (the default)
the step after an episode end is a reset step whose action is ignored; with ``SAME_STEP`` the returned
observation is already the reset one and the step's own info lives in ``info["final_info"]``; with
``DISABLED`` ended sub-envs are reset with ``reset(options={"reset_mask": ...})``. In every mode the steps of a
sub-env after its episode ended are masked out, so no transition crosses an episode boundary.

Instructions come from the env: ``info["instruction"]`` at reset and step when present, otherwise
``envs.get_attr("instruction")``, otherwise the empty string.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tgrpo.config import ROLLOUT_MODES
from tgrpo.policy import Observation, TokenActionPolicy


def stack_observations(obs_list: Sequence[Observation]) -> Observation:
    """Stack L batched observations ([M, ...] or dicts of them) into [L, M, ...]."""
    first = obs_list[0]
    if isinstance(first, Mapping):
        return {k: stack_observations([o[k] for o in obs_list]) for k in first}
    return np.stack([np.asarray(o) for o in obs_list])


def index_observations(obs: Observation, *index: Any) -> Observation:
    """Index every array of an observation (array or dict of arrays) with the same NumPy index."""
    if isinstance(obs, Mapping):
        return {k: index_observations(v, *index) for k, v in obs.items()}
    return obs[index]


@dataclass
class GroupRollout:
    """One group of M trajectories of up to L steps.

    Attributes:
        obs: observations before each action, stacked [L, M, ...] (array or dict of arrays).
        instructions: [L, M] object array of instruction strings.
        tokens: [M, L, D] int64 sampled action tokens.
        old_logp: [M, L, D] their log-probs under the sampling policy.
        rewards: [M, L] float64 env rewards (0 on masked steps).
        mask: [M, L] bool, True where step t of trajectory i exists.
        success: [M] bool, whether trajectory i reached success (``info[success_key]``).
        env_steps: number of valid transitions (``mask.sum()``).
        timings: seconds spent in ``policy.sample`` (``sample_s``) and ``envs.step`` (``env_s``).
    """

    obs: Observation
    instructions: np.ndarray
    tokens: torch.Tensor
    old_logp: torch.Tensor
    rewards: np.ndarray
    mask: np.ndarray
    success: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def num_envs(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def length(self) -> int:
        """L, the number of time steps of the group."""
        return int(self.rewards.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """[M] number of valid steps |o_i| of each trajectory."""
        return self.mask.sum(1)

    @property
    def returns(self) -> np.ndarray:
        """[M] total reward R_i of each trajectory."""
        return self.rewards.sum(1)

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum())

    def batch(self, env_idx: np.ndarray, step_idx: np.ndarray) -> tuple[Observation, list[str]]:
        """Observations and instructions of the samples (env_idx[n], step_idx[n]), batched over n."""
        return index_observations(self.obs, step_idx, env_idx), list(self.instructions[step_idx, env_idx])


def _autoreset_mode(envs: Any) -> str:
    mode = getattr(envs, "metadata", {}).get("autoreset_mode", "NextStep")
    return str(getattr(mode, "value", mode))


def _read_bool(info: Mapping[str, Any], key: str, m: int) -> np.ndarray:
    """[M] bool from a vector-env info key (with its ``_key`` mask); False where absent."""
    if key not in info:
        return np.zeros(m, dtype=bool)
    vals = np.asarray(info[key])
    if vals.shape != (m,):
        raise ValueError(f'info["{key}"] must have shape ({m},) (one entry per sub-env), got {vals.shape}.')
    present = np.asarray(info.get("_" + key, np.ones(m, dtype=bool)), dtype=bool)
    return vals.astype(bool) & present


def read_success(
    info: Mapping[str, Any], m: int, autoreset_mode: str = "NextStep", key: str = "is_success"
) -> np.ndarray:
    """[M] bool success flags of one vector step, from ``info[key]`` (or ``final_info``)."""
    success = _read_bool(info, key, m)
    if autoreset_mode == "SameStep" and "final_info" in info:
        ended = np.asarray(info.get("_final_info", np.ones(m, dtype=bool)), dtype=bool)
        success = np.where(ended, _read_bool(info["final_info"], key, m), success)
    return success


def read_instructions(
    envs: Any, info: Mapping[str, Any] | None, previous: Sequence[str] | None = None
) -> list[str]:
    """Instruction of each sub-env: ``info["instruction"]``, else ``envs.get_attr``, else previous or ""."""
    m = envs.num_envs
    out = list(previous) if previous is not None else None
    if info is not None and "instruction" in info:
        vals = np.asarray(info["instruction"], dtype=object)
        present = np.asarray(info.get("_instruction", np.ones(m, dtype=bool)), dtype=bool)
        base = out if out is not None else _get_attr_instructions(envs)
        return [str(vals[i]) if present[i] else base[i] for i in range(m)]
    if out is not None:
        return out
    return _get_attr_instructions(envs)


def _get_attr_instructions(envs: Any) -> list[str]:
    try:
        vals = envs.get_attr("instruction")
        return [str(v) for v in vals]
    except Exception:  # noqa: BLE001 - sub-envs without an instruction attribute
        return [""] * envs.num_envs


def collect_group(
    envs: Any,
    policy: TokenActionPolicy,
    *,
    max_steps: int,
    mode: str = "paper",
    temperature: float = 1.0,
    seed: int | None = None,
    success_key: str = "is_success",
) -> GroupRollout:
    """Roll out one group of ``envs.num_envs`` trajectories with ``policy``.

    Args:
        envs: a ``gymnasium.vector.VectorEnv`` (any observation space the policy accepts; 7-D Box actions).
        policy: a :class:`~tgrpo.policy.TokenActionPolicy`.
        max_steps: step cap per trajectory (the paper uses 200 in training).
        mode: ``"paper"`` or ``"independent"`` (see the module docstring).
        temperature: sampling temperature passed to ``policy.sample``.
        seed: seed for ``envs.reset`` (sub-env i gets ``seed + i``); None keeps the env's RNG.
        success_key: the boolean info key that counts as success (and ends a ``"paper"`` group), e.g.
            ``"is_placed"`` for ``libero_gym``'s stricter placement fact.

    Returns:
        A :class:`GroupRollout` with L <= ``max_steps``.

    Raises:
        ValueError: on an unknown mode, a non-positive ``max_steps``, actions of the wrong shape, or
            non-finite rewards.
    """
    if mode not in ROLLOUT_MODES:
        raise ValueError(f"mode={mode!r} is not known; use one of {ROLLOUT_MODES}.")
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be >= 1.")
    m = int(envs.num_envs)
    autoreset = _autoreset_mode(envs)
    obs, info = envs.reset(seed=seed)
    instr = read_instructions(envs, info)

    obs_buf: list[Observation] = []
    instr_buf: list[list[str]] = []
    tok_buf: list[torch.Tensor] = []
    logp_buf: list[torch.Tensor] = []
    rew_buf: list[np.ndarray] = []
    mask_buf: list[np.ndarray] = []
    active = np.ones(m, dtype=bool)
    success = np.zeros(m, dtype=bool)
    sample_s = env_s = 0.0
    action_shape = getattr(getattr(envs, "single_action_space", None), "shape", None)

    for t in range(max_steps):
        t0 = time.perf_counter()
        tokens, logp = policy.sample(obs, instr, temperature)
        actions = np.asarray(policy.tokens_to_actions(tokens), dtype=np.float32)
        t1 = time.perf_counter()
        if action_shape is not None and actions.shape != (m, *action_shape):
            raise ValueError(
                f"policy produced actions of shape {actions.shape}; the env expects {(m, *action_shape)}."
            )
        obs_buf.append(obs)
        instr_buf.append(instr)
        tok_buf.append(tokens.detach().cpu())
        logp_buf.append(logp.detach().cpu())
        mask_buf.append(active.copy())

        obs, reward, terminated, truncated, info = envs.step(actions)
        env_s += time.perf_counter() - t1
        sample_s += t1 - t0
        reward = np.asarray(reward, dtype=np.float64)
        if not np.isfinite(reward[active]).all():
            bad = np.flatnonzero(~np.isfinite(reward) & active)
            raise ValueError(
                f"env returned non-finite rewards {reward[bad]} for sub-envs {bad.tolist()} at step {t}; "
                "rewards must be finite numbers."
            )
        rew_buf.append(np.where(active, reward, 0.0))
        succ_t = read_success(info, m, autoreset, success_key) & active
        success |= succ_t
        ended_any = np.asarray(terminated, bool) | np.asarray(truncated, bool)
        active = active & ~ended_any
        if mode == "paper" and succ_t.any():
            break
        if not active.any():
            break
        if autoreset == "Disabled" and ended_any.any():  # also sub-envs already masked
            obs, _ = envs.reset(options={"reset_mask": ended_any})
        instr = read_instructions(envs, info, previous=instr)

    return GroupRollout(
        obs=stack_observations(obs_buf),
        instructions=np.array(instr_buf, dtype=object).reshape(len(instr_buf), m),
        tokens=torch.stack(tok_buf, dim=1),
        old_logp=torch.stack(logp_buf, dim=1),
        rewards=np.stack(rew_buf, axis=1),
        mask=np.stack(mask_buf, axis=1),
        success=success,
        timings={"sample_s": sample_s, "env_s": env_s},
    )
