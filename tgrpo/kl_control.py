"""Bounds on how far training moves the policy: an early stop on the KL to the rollout policy and an adaptive
KL weight towards the reference policy. Both are off unless the config asks for them.

Two rules, each on one of the KL estimates the loss already measures (:func:`tgrpo.loss.tgrpo_loss`, per
7-token action, k3 estimator):

Early stop (``target_kl``, TGRPO and PPO)
    Before each optimizer step, the batch's ``approx_kl``, the KL between the policy that sampled the group
    (``pi_old``) and the current policy, is compared with ``TARGET_KL_STOP_FACTOR * target_kl``. Above it,
    this step and all the remaining steps of the iteration are skipped (``losses/early_stop`` = 1). The first
    step of an iteration always runs (its KL is 0: the policy has not moved yet), so no iteration is empty. This
    bounds the step one iteration takes: the per-step schedule takes up to ``max_steps`` optimizer steps per
    group, and nothing else stops them from walking far from the policy that collected the data.

Adaptive KL weight (``target_ref_kl``, TGRPO)
    After each iteration, with ``d`` the iteration's mean KL to the reference (SFT) policy
    (``losses/ref_kl``): ``d > TARGET_KL_STOP_FACTOR * target`` multiplies beta by ``KL_BETA_ADAPT_FACTOR``,
    ``d < target / TARGET_KL_STOP_FACTOR`` divides it by the same factor, and beta stays within
    ``KL_BETA_BOUNDS`` (the rule of the adaptive KL penalty of Schulman et al., 2017, PPO paper §4). The
    starting beta is ``kl_beta``; the current one is logged as ``losses/kl_beta`` and kept in the checkpoint.
    This bounds the slow drift over many iterations that the early stop does not see.
"""

from __future__ import annotations

import math

__all__ = ["TARGET_KL_STOP_FACTOR", "KL_BETA_ADAPT_FACTOR", "KL_BETA_BOUNDS", "kl_too_far", "adapt_kl_beta"]

TARGET_KL_STOP_FACTOR = 1.5
"""A KL above this many times its target stops the iteration's updates (early stop) or raises beta
(adaptive beta); below target / factor, beta is lowered."""
KL_BETA_ADAPT_FACTOR = 2.0
"""Beta is multiplied or divided by this factor per iteration when the KL to the reference is off target."""
KL_BETA_BOUNDS = (1e-4, 10.0)
"""The adaptive beta stays within these bounds (never 0, so the KL to the reference is still measured)."""


def kl_too_far(kl: float, target: float | None) -> bool:
    """Whether a measured KL calls for the early stop: ``kl > TARGET_KL_STOP_FACTOR * target``.

    A KL that is not finite counts as too far. ``target`` None (the control is off) never stops.
    """
    if target is None:
        return False
    return not math.isfinite(kl) or kl > TARGET_KL_STOP_FACTOR * target


def adapt_kl_beta(beta: float, ref_kl: float, target: float | None) -> float:
    """The next iteration's KL weight from this iteration's mean KL to the reference (see the module docstring).

    Args:
        beta: the current weight (> 0).
        ref_kl: the iteration's mean KL to the reference policy, per action.
        target: the target KL; None leaves beta unchanged.

    Returns:
        The new beta, within ``KL_BETA_BOUNDS``.
    """
    if target is None:
        return beta
    lo, hi = KL_BETA_BOUNDS
    if not math.isfinite(ref_kl) or ref_kl > TARGET_KL_STOP_FACTOR * target:
        beta *= KL_BETA_ADAPT_FACTOR
    elif ref_kl < target / TARGET_KL_STOP_FACTOR:
        beta /= KL_BETA_ADAPT_FACTOR
    return float(min(max(beta, lo), hi))
