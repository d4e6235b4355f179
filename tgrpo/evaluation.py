"""Evaluation of a token-action policy on a vector env (usable as the trainer's evaluation hook)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tgrpo.policy import TokenActionPolicy
from tgrpo.rollout import collect_group

#: Seeds of evaluation resets start here, away from the training seeds ``seed + k * M``.
EVAL_SEED_OFFSET = 1_000_000


def evaluate(
    envs: Any,
    policy: TokenActionPolicy,
    episodes: int = 50,
    *,
    max_steps: int = 200,
    temperature: float = 0.0,
    seed: int = EVAL_SEED_OFFSET,
) -> dict[str, float]:
    """Run ``episodes`` episodes (rounded up to whole groups of ``envs.num_envs``) and report success.

    Every sub-env runs its own episode to termination or ``max_steps`` (``"independent"`` rollouts).

    Args:
        envs: a ``gymnasium.vector.VectorEnv``.
        policy: the policy to evaluate.
        episodes: number of episodes (the paper reports 50 per task).
        max_steps: step cap per episode.
        temperature: 0 for greedy decoding (argmax tokens), > 0 to sample.
        seed: first reset seed; round j resets with ``seed + j * num_envs``.

    Returns:
        ``success_rate``, ``mean_return``, ``mean_length``, ``episodes``.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes} must be >= 1.")
    m = envs.num_envs
    succ, rets, lens = [], [], []
    for j in range(-(-episodes // m)):
        g = collect_group(
            envs, policy, max_steps=max_steps, mode="independent", temperature=temperature, seed=seed + j * m
        )
        succ.append(g.success)
        rets.append(g.returns)
        lens.append(g.lengths)
    s, r, n = (np.concatenate(x)[:episodes] for x in (succ, rets, lens))
    return {
        "success_rate": float(s.mean()),
        "mean_return": float(r.mean()),
        "mean_length": float(n.mean()),
        "episodes": float(len(s)),
    }
