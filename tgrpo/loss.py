"""The TGRPO objective (paper eq. 9 with eq. 3's clipping) as a loss to minimise.

For samples n = (trajectory i, step t), each an action of D = 7 tokens::

    loss = sum_n w_n * [ -surrogate_n + beta * KL_n ],   w_n = 1 / (M * |o_i|)

with ``sum_n w_n = 1`` over a whole group, so the full-batch loss is exactly
``-(1/M) sum_i (1/|o_i|) sum_t [min(r A, clip(r, 1-eps, 1+eps) A) - beta KL]``. On a subset (one time step
of Algorithm 1, or a minibatch) the weights are renormalised to sum to 1, i.e. the loss is the weighted
mean over the subset; in the paper's mode, where all trajectories have the same length, that is the plain
mean over the M envs at step t.

Ratio level (``ratio_level``):

``"token"``
    one ratio per token, ``r_{n,k} = exp(logp - old_logp)``; the surrogate and the KL of a sample are the
    mean over its D tokens (each token is one element of o_i, as in GRPO for language models).
``"action"``
    one ratio per action, ``r_n = exp(sum_k (logp - old_logp))`` (the probability ratio of the whole
    7-token action); the KL of a sample is the sum of its per-token estimates (KL of the action).

KL to the reference policy uses the k3 estimator per token,
``exp(ref - logp) - (ref - logp) - 1`` (unbiased, always >= 0), with tokens sampled from the old policy. Its
log-ratio ``ref - logp`` is clamped to ``[-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND]`` (as verl does) and the
estimate is computed in float32, so one token the current policy has all but ruled out gives at most
``exp(20) - 21 ~ 4.9e8`` instead of ``inf`` (and no gradient beyond the bound).
"""

from __future__ import annotations

import torch

from tgrpo.config import RATIO_LEVELS

#: Bound on |ref_logp - logp| inside :func:`k3_kl`'s exp: exp(20) ~ 4.9e8 is finite in float32 and bfloat16.
K3_LOG_RATIO_BOUND = 20.0


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref): ``exp(d) - d - 1`` with ``d = ref - logp``.

    ``d`` is clamped to ``[-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND]`` and the estimate computed in float32, so it
    is finite (at most ``exp(20) - 21``) for any finite inputs; beyond the bound its gradient is 0.

    Args:
        logp: [...] log-probs of the sampled tokens under the current policy.
        ref_logp: [...] log-probs of the same tokens under the reference policy.

    Returns:
        [...] non-negative float32 estimates.
    """
    d = (ref_logp.float() - logp.float()).clamp(-K3_LOG_RATIO_BOUND, K3_LOG_RATIO_BOUND)
    return torch.exp(d) - d - 1.0


def tgrpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    kl_beta: float = 0.0,
    ratio_level: str = "token",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate plus k3 KL penalty, averaged with per-sample weights.

    Args:
        logp: [N, D] log-probs of the taken tokens under the current policy (with grad).
        old_logp: [N, D] log-probs under the policy that sampled them (no grad).
        advantages: [N] advantage of each sample (the same for all D tokens of an action).
        weights: [N] non-negative sample weights, e.g. ``1 / |o_i|`` for eq. 9's per-trajectory
            normalisation; renormalised to sum to 1. None: uniform.
        ref_logp: [N, D] reference log-probs; required when ``kl_beta > 0``.
        entropy: [N, D] per-token entropies, only reported in the metrics.
        clip_eps: clipping range epsilon, in (0, 1).
        kl_beta: weight beta of the KL penalty, >= 0.
        ratio_level: ``"token"`` or ``"action"`` (see the module docstring).

    Returns:
        ``(loss, metrics)``: the scalar loss to minimise and floats ``policy_loss``, ``ref_kl`` (k3 to the
        reference, per action), ``approx_kl`` (k3 estimate of KL(old || current) per action, CleanRL's ``approx_kl``),
        ``clip_fraction`` (share of ratios outside the clip range), ``ratio_mean``, and, when ``entropy`` is
        given, ``entropy_token`` (mean entropy of one action token, nats) and ``entropy_action`` (of a whole
        action: the sum over its D tokens, D x ``entropy_token``).

    Raises:
        ValueError: on mismatched shapes, unknown ``ratio_level``, or a missing ``ref_logp``.
    """
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"ratio_level={ratio_level!r} is not known; use one of {RATIO_LEVELS}.")
    if logp.ndim != 2 or old_logp.shape != logp.shape:
        raise ValueError(
            f"logp and old_logp must both be [N, D]; got {tuple(logp.shape)} and {tuple(old_logp.shape)}."
        )
    n = logp.shape[0]
    if advantages.shape != (n,):
        raise ValueError(f"advantages must be [N]={n}, got {tuple(advantages.shape)}.")
    if not 0.0 < clip_eps < 1.0:
        raise ValueError(f"clip_eps={clip_eps} must lie in (0, 1), e.g. 0.2.")
    if kl_beta < 0:
        raise ValueError(f"kl_beta={kl_beta} must be >= 0.")
    if kl_beta > 0 and ref_logp is None:
        raise ValueError("kl_beta > 0 needs ref_logp (reference log-probs); pass them or set kl_beta=0.")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError(f"ref_logp must be [N, D] like logp, got {tuple(ref_logp.shape)}.")
    if weights is None:
        w = torch.full((n,), 1.0 / max(n, 1), dtype=logp.dtype, device=logp.device)
    else:
        if weights.shape != (n,):
            raise ValueError(f"weights must be [N]={n}, got {tuple(weights.shape)}.")
        w = weights.to(logp.dtype)
        w = w / w.sum().clamp(min=1e-12)
    adv = advantages.to(logp.dtype).detach()
    old_logp = old_logp.detach()

    log_ratio = logp - old_logp
    if ratio_level == "token":
        ratio = log_ratio.exp()
        a = adv[:, None]
        surr = torch.minimum(ratio * a, ratio.clamp(1 - clip_eps, 1 + clip_eps) * a).mean(-1)
    else:
        ratio = log_ratio.sum(-1).exp()
        surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    policy_loss = -(w * surr).sum()
    loss = policy_loss

    metrics: dict[str, float] = {}
    if ref_logp is not None:
        kl_tok = k3_kl(logp, ref_logp.detach())
        kl = kl_tok.mean(-1) if ratio_level == "token" else kl_tok.sum(-1)
        if kl_beta > 0:
            loss = loss + kl_beta * (w * kl).sum()
        metrics["ref_kl"] = float((w * kl_tok.detach().sum(-1)).sum())
    with torch.no_grad():
        metrics["policy_loss"] = float(policy_loss)
        metrics["approx_kl"] = float((w * k3_kl(old_logp, logp).sum(-1)).sum())
        metrics["clip_fraction"] = float(((ratio - 1).abs() > clip_eps).float().mean())
        metrics["ratio_mean"] = float(ratio.mean())
        if entropy is not None:
            ent = entropy.detach().float()
            metrics["entropy_token"] = float((w * ent.mean(-1)).sum())
            metrics["entropy_action"] = float((w * ent.sum(-1)).sum())
    return loss, metrics
