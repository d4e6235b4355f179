"""PPO with a learned value head: the baseline the paper compares TGRPO against.

Same rollouts, token-action policies and clipped surrogate as TGRPO (:func:`tgrpo.loss.tgrpo_loss`); the
advantage comes from GAE over a learned state-value function instead of group statistics. Sub-envs run
independently (``"independent"`` rollouts); the end of each trajectory (termination, truncation or the step
cap) is treated as terminal, i.e. no value bootstrap after the last step.

For a comparison with TGRPO on equal terms (all off by default, :class:`~tgrpo.config.PPOConfig`):
``env_step_budget`` stops at the env steps of the TGRPO run, ``value_max_grad_norm`` clips the value head's
gradient apart from the policy's, ``normalize_value_targets`` trains the value head on targets normalised by
their running mean and std (:class:`RunningMeanStd`), and ``target_kl`` stops an iteration's updates as in
TGRPO (:mod:`tgrpo.kl_control`). The history logs ``charts/env_steps`` and ``charts/optimizer_steps``.

Example:
    >>> from tgrpo.baselines import PPOConfig, train_ppo
    >>> result = train_ppo(envs, policy, config=PPOConfig(iterations=50))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tgrpo.checkpoint import CHECKPOINT_NAME, save_checkpoint
from tgrpo.config import PPOConfig
from tgrpo.kl_control import kl_too_far
from tgrpo.logger import MetricsLogger, plot_training_curve, progress_bar
from tgrpo.loss import tgrpo_loss
from tgrpo.nonfinite import NonFiniteGuard, check_finite_state
from tgrpo.policy import MLPTokenPolicy, Observation, TokenActionPolicy, flatten_observation
from tgrpo.rollout import collect_group
from tgrpo.trainer import TrainResult


def gae(
    rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float = 0.99, lam: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation over masked trajectories (terminal at each trajectory's end).

    Args:
        rewards: [M, L] rewards (ignored where masked).
        values: [M, L] value estimates V(s_t).
        mask: [M, L] bool, True on valid steps; each row is valid on a prefix.
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        advantages [M, L] and value targets ``advantages + values`` [M, L], 0 where masked.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.ndim != 2:
        raise ValueError(
            f"rewards, values and mask must all be [M, L]; got {rewards.shape}, {values.shape}, {mask.shape}."
        )
    m, length = rewards.shape
    adv = np.zeros((m, length), dtype=np.float64)
    last = np.zeros(m)
    for t in reversed(range(length)):
        nxt_valid = mask[:, t + 1] if t + 1 < length else np.zeros(m, dtype=bool)
        next_v = np.where(nxt_valid, values[:, t + 1] if t + 1 < length else 0.0, 0.0)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * np.where(nxt_valid, last, 0.0)
        adv[:, t] = np.where(mask[:, t], last, 0.0)
    return adv, np.where(mask, adv + values, 0.0)


class RunningMeanStd:
    """Running mean and variance of a stream of scalars (parallel update of Chan et al., as in SB3).

    Attributes:
        mean: the mean of every value seen.
        var: their (population) variance.
        count: how many were seen.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        """Add a batch of values."""
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            return
        b_mean, b_var, b_n = float(x.mean()), float(x.var()), int(x.size)
        if self.count == 0:
            self.mean, self.var, self.count = b_mean, b_var, b_n
            return
        n = self.count + b_n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / n
        self.mean, self.var, self.count = self.mean + delta * b_n / n, m2 / n, n

    @property
    def std(self) -> float:
        """Standard deviation, floored at ``VALUE_STD_FLOOR``."""
        return max(float(np.sqrt(self.var)), VALUE_STD_FLOOR)

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std``."""
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std

    def denormalize(self, x: np.ndarray) -> np.ndarray:
        """``x * std + mean``."""
        return np.asarray(x, dtype=np.float64) * self.std + self.mean

    def state_dict(self) -> dict[str, float]:
        """Plain values, for the checkpoint."""
        return {"mean": self.mean, "var": self.var, "count": self.count}


VALUE_STD_FLOOR = 1e-4
"""Smallest standard deviation :class:`RunningMeanStd` divides by (targets that are all equal)."""


class ValueMLP(nn.Module):
    """State-value head V(s) on flattened observations.

    Args:
        obs_dim: size of the flattened observation.
        hidden: hidden layer widths.
        obs_keys: for dict observations, the keys to use (as in :class:`~tgrpo.policy.MLPTokenPolicy`).
    """

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (64, 64), obs_keys: Sequence[str] | None = None):
        super().__init__()
        self.obs_keys = None if obs_keys is None else tuple(obs_keys)
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        self.net = nn.Sequential(*layers, nn.Linear(width, 1))

    @classmethod
    def from_policy(cls, policy: MLPTokenPolicy, **kwargs: Any) -> ValueMLP:
        """A value head reading the same observation features as ``policy``."""
        return cls(policy.obs_dim, obs_keys=policy.obs_keys, **kwargs)

    def forward(self, obs: Observation) -> torch.Tensor:
        """Values [B] of a batch of observations."""
        keys = self.obs_keys
        if keys is None and isinstance(obs, Mapping) and "state" in obs:
            keys = ("state",)
        x = torch.as_tensor(flatten_observation(obs, keys), device=next(self.parameters()).device)
        return self.net(x).squeeze(-1)


def train_ppo(
    env: Any,
    policy: TokenActionPolicy | None = None,
    value_fn: nn.Module | None = None,
    config: PPOConfig | None = None,
    *,
    eval_fn: Callable[[TokenActionPolicy, int, float], dict[str, float]] | None = None,
) -> TrainResult:
    """Train ``policy`` and a value head with PPO + GAE on the vector env ``env``.

    Args:
        env: a ``gymnasium.vector.VectorEnv`` with 7-D Box actions.
        policy: a token-action policy; None builds an ``MLPTokenPolicy`` for the env.
        value_fn: a module mapping a batch of observations to values [B]; None builds a
            :class:`ValueMLP` (needs an ``MLPTokenPolicy`` to copy its observation keys from, or a Box/Dict
            space with ``"state"``).
        config: options; None uses ``PPOConfig()``.
        eval_fn: hook ``eval_fn(policy, iteration, done) -> {name: value}`` called after every iteration, where
            ``done`` (0-1) is the fraction of the run done: the greater of the iterations' and, with
            ``env_step_budget``, the env steps' (1 at the last iteration either way); its values are logged
            under ``eval/``.

    Returns:
        A :class:`~tgrpo.trainer.TrainResult`; the value head is saved in the final checkpoint.
    """
    cfg = config or PPOConfig()
    # seeded before the value head is made: its initial weights come from the run's seed, not from whatever the
    # process drew from torch's generator before
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if policy is None:
        policy = MLPTokenPolicy.from_space(env.single_observation_space, seed=cfg.seed)
    if value_fn is None:
        if not isinstance(policy, MLPTokenPolicy):
            raise ValueError("value_fn is required for policies other than MLPTokenPolicy.")
        value_fn = ValueMLP.from_policy(policy)
    rng = np.random.default_rng(cfg.seed)
    m = int(env.num_envs)
    out_dir = Path(cfg.output_dir)
    logger = MetricsLogger(out_dir, cfg.log_formats)
    pi_params = [p for p in policy.trainable_parameters() if p.requires_grad]
    v_params = list(value_fn.parameters())
    optimizer = torch.optim.AdamW(pi_params + v_params, lr=cfg.resolve_lr(policy))
    guard = NonFiniteGuard.for_config(cfg, policy)
    bar = progress_bar(cfg.progress_bar, cfg.iterations, desc="ppo")
    value_norm = RunningMeanStd() if cfg.normalize_value_targets else None
    env_steps = 0
    optimizer_steps = 0
    last_iteration = -1
    try:
        for k in range(cfg.iterations):
            if cfg.env_step_budget is not None and env_steps >= cfg.env_step_budget:
                break
            last_iteration = k
            t0 = time.perf_counter()
            g = collect_group(
                env,
                policy,
                max_steps=cfg.max_steps,
                mode="independent",
                temperature=cfg.temperature,
                seed=cfg.seed + k * m,
                success_key=cfg.success_key,
            )
            rollout_s = time.perf_counter() - t0
            env_steps += g.env_steps
            env_idx, step_idx = np.nonzero(g.mask)
            with torch.no_grad():
                obs_all, _ = g.batch(env_idx, step_idx)
                values = np.zeros(g.rewards.shape)
                v_out = value_fn(obs_all).cpu().numpy()
                values[env_idx, step_idx] = v_out if value_norm is None else value_norm.denormalize(v_out)
            adv, targets = gae(g.rewards, values, g.mask, cfg.gamma, cfg.gae_lambda)
            if value_norm is not None:
                # the value head learns targets in the units of their running statistics
                value_norm.update(targets[g.mask])
                targets = np.where(g.mask, value_norm.normalize(targets), 0.0)
            ref = None
            if cfg.kl_beta > 0:
                ref = policy.ref_log_probs(
                    obs_all,
                    list(g.instructions[step_idx, env_idx]),
                    g.tokens[env_idx, step_idx],
                    cfg.temperature,
                )
            sums: dict[str, float] = {}
            n_updates = 0
            stopped = False
            t1 = time.perf_counter()
            for _ in range(cfg.epochs):
                if stopped:
                    break
                order = rng.permutation(env_idx.size)
                for s in range(0, order.size, cfg.minibatch_size):
                    sel = order[s : s + cfg.minibatch_size]
                    ei, si = env_idx[sel], step_idx[sel]
                    obs, instr = g.batch(ei, si)
                    logp, ent = policy.log_probs(obs, instr, g.tokens[ei, si], cfg.temperature)
                    a = torch.as_tensor(adv[ei, si], dtype=logp.dtype, device=logp.device)
                    if cfg.normalize_advantages and a.numel() > 1:
                        a = (a - a.mean()) / (a.std() + 1e-8)
                    pg_loss, metrics = tgrpo_loss(
                        logp,
                        g.old_logp[ei, si].to(logp.device, logp.dtype),
                        a,
                        entropy=ent,
                        ref_logp=None if ref is None else ref[sel].to(logp.device, logp.dtype),
                        clip_eps=cfg.clip_eps,
                        kl_beta=cfg.kl_beta,
                        ratio_level=cfg.ratio_level,
                    )
                    if n_updates > 0 and kl_too_far(metrics["approx_kl"], cfg.target_kl):
                        stopped = True
                        break
                    v = value_fn(obs)
                    v_loss = (
                        0.5
                        * ((v - torch.as_tensor(targets[ei, si], dtype=v.dtype, device=v.device)) ** 2).mean()
                    )
                    loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * ent.sum(-1).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    gn, v_gn = clip_gradients(pi_params, v_params, cfg)
                    if not guard.ok(loss.detach(), gn + v_gn, where=f"iteration {k}"):
                        optimizer.zero_grad(set_to_none=True)
                        continue
                    optimizer.step()
                    metrics.update(
                        loss=float(loss.detach()), value_loss=float(v_loss.detach()), grad_norm=float(gn),
                        value_grad_norm=float(v_gn),
                    )
                    for key, val in metrics.items():
                        sums[key] = sums.get(key, 0.0) + val
                    n_updates += 1
            row: dict[str, Any] = {"iteration": k}
            row.update({f"losses/{key}": val / max(n_updates, 1) for key, val in sums.items()})
            optimizer_steps += n_updates
            row["losses/optimizer_steps"] = float(n_updates)
            row["losses/early_stop"] = float(stopped)
            row["losses/nonfinite_skips"] = float(guard.take_count())
            row.update(
                {
                    "charts/success_rate": float(g.success.mean()),
                    "charts/mean_return": float(g.returns.mean()),
                    "charts/episode_length": float(g.lengths.mean()),
                    "charts/env_steps": float(env_steps),
                    "charts/optimizer_steps": float(optimizer_steps),
                    "time/rollout_s": rollout_s,
                    "time/update_s": time.perf_counter() - t1,
                }
            )
            if eval_fn is not None:
                done = (k + 1) / cfg.iterations
                if cfg.env_step_budget is not None:
                    done = max(done, env_steps / cfg.env_step_budget)
                row.update({f"eval/{n}": float(v) for n, v in eval_fn(policy, k, min(done, 1.0)).items()})
            logger.write(row)
            bar.update(1)
            bar.set_postfix(success=f"{row['charts/success_rate']:.2f}")
    finally:
        bar.close()
        logger.close()
    policy_state, value_state = policy.state_dict(), value_fn.state_dict()
    check_finite_state(policy_state, "the PPO policy")
    check_finite_state(value_state, "the PPO value head")
    ckpt = save_checkpoint(
        out_dir / CHECKPOINT_NAME,
        {
            "iteration": last_iteration,
            "env_steps": env_steps,
            "optimizer_steps": optimizer_steps,
            "policy": policy_state,
            "value_fn": value_state,
            "value_norm": None if value_norm is None else value_norm.state_dict(),
            "optimizer": optimizer.state_dict(),
            "config": cfg.to_dict(),
        },
    )
    if cfg.plot:
        plot_training_curve(logger.rows, out_dir / "training_curve.png")
    result = TrainResult(policy=policy, history=list(logger.rows), output_dir=out_dir, checkpoint=ckpt)
    result.value_fn = value_fn  # type: ignore[attr-defined]
    result.value_norm = value_norm  # type: ignore[attr-defined]
    return result


def clip_gradients(
    pi_params: list[torch.Tensor], v_params: list[torch.Tensor], cfg: PPOConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip the gradients (policy and value head apart with ``cfg.value_max_grad_norm``, else together) and
    return the norms of the policy's and of the value head's gradient before clipping."""
    inf = float("inf")
    if cfg.value_max_grad_norm is None:
        v_gn = torch.nn.utils.clip_grad_norm_(v_params, inf)
        gn = torch.nn.utils.clip_grad_norm_(pi_params, inf)
        torch.nn.utils.clip_grad_norm_(pi_params + v_params, cfg.max_grad_norm or inf)
        return gn, v_gn
    gn = torch.nn.utils.clip_grad_norm_(pi_params, cfg.max_grad_norm or inf)
    v_gn = torch.nn.utils.clip_grad_norm_(v_params, cfg.value_max_grad_norm)
    return gn, v_gn
