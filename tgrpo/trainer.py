"""``tgrpo.train``: TGRPO (paper Algorithm 1) over any vector env and any token-action policy.

One iteration reads top to bottom like Algorithm 1::

    group = collect_group(envs, policy)                    # M trajectories, rewards R[i, t]
    adv   = alpha1 * S + alpha2 * T                        # eqs. 6-8 (tgrpo.advantages)
    for each batch (one time step t over the M envs, or a minibatch):
        loss = tgrpo_loss(policy.log_probs(...), old_logp, adv, weights=1/|o_i|, ...)
        AdamW step with gradient clipping
    log metrics, checkpoint, evaluate
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgrpo.advantages import tgrpo_advantages, trajectory_advantages
from tgrpo.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    remove_stale_temp_files,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from tgrpo.config import ConfigError, TGRPOConfig
from tgrpo.evaluation import evaluate
from tgrpo.kl_control import adapt_kl_beta, kl_too_far
from tgrpo.logger import MetricsLogger, plot_training_curve, progress_bar
from tgrpo.loss import tgrpo_loss
from tgrpo.nonfinite import NonFiniteGuard, check_finite_state
from tgrpo.policies.common import recover_dir, write_dir_atomically
from tgrpo.policy import MLPTokenPolicy, TokenActionPolicy
from tgrpo.rollout import GroupRollout, collect_group

log = logging.getLogger("tgrpo")

EvalHook = Callable[[TokenActionPolicy, int], dict[str, float]]

#: Samples per forward pass when computing reference log-probs for a whole group.
REF_CHUNK = 1024
#: Config fields that may differ between a run and its resumption without changing its meaning.
RESUMABLE_CHANGES = {
    "iterations", "resume", "progress_bar", "plot", "log_interval", "eval_interval", "extra", "max_nonfinite_skips"
}
#: Directory beside ``checkpoint.pt`` where a policy with a ``save_pretrained`` method (``HFVLAPolicy``: its
#: LoRA adapter in peft's format) writes its own files at every checkpoint.
ADAPTER_DIR_NAME = "adapter"


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        policy: the trained policy (the same object that was passed in).
        history: one metrics dict per iteration (including those before a resume).
        output_dir: the run directory.
        checkpoint: path of the last checkpoint, or None if none was written.
    """

    policy: TokenActionPolicy
    history: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path = Path(".")
    checkpoint: Path | None = None


def compute_advantages(group: GroupRollout, cfg: TGRPOConfig) -> np.ndarray:
    """[M, L] advantages of a group under ``cfg.advantage_mode`` (0 on masked steps)."""
    if cfg.advantage_mode == "tgrpo":
        return tgrpo_advantages(group.rewards, cfg.alpha1, cfg.alpha2, mask=group.mask)
    t = trajectory_advantages(group.success.astype(np.float64))
    return t[:, None] * group.mask


def _batches(
    group: GroupRollout, cfg: TGRPOConfig, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (env_idx, step_idx) of each optimizer step of one epoch."""
    if cfg.update_schedule == "per_step":
        for t in range(group.length):
            env_idx = np.flatnonzero(group.mask[:, t])
            if env_idx.size:
                yield env_idx, np.full_like(env_idx, t)
        return
    env_idx, step_idx = np.nonzero(group.mask)
    order = rng.permutation(env_idx.size)
    for s in range(0, order.size, cfg.minibatch_size):
        sel = order[s : s + cfg.minibatch_size]
        yield env_idx[sel], step_idx[sel]


def _ref_log_probs(policy: TokenActionPolicy, group: GroupRollout, temperature: float) -> torch.Tensor:
    """[M, L, D] reference log-probs of the group's tokens (0 on masked steps)."""
    out = torch.zeros(group.tokens.shape, dtype=group.old_logp.dtype)
    env_idx, step_idx = np.nonzero(group.mask)
    for s in range(0, env_idx.size, REF_CHUNK):
        ei, si = env_idx[s : s + REF_CHUNK], step_idx[s : s + REF_CHUNK]
        obs, instr = group.batch(ei, si)
        lp = policy.ref_log_probs(obs, instr, group.tokens[ei, si], temperature)
        out[ei, si] = lp.detach().cpu().to(out.dtype)
    return out


def update_policy(
    policy: TokenActionPolicy,
    optimizer: torch.optim.Optimizer,
    group: GroupRollout,
    advantages: np.ndarray,
    cfg: TGRPOConfig,
    rng: np.random.Generator,
    guard: NonFiniteGuard | None = None,
    kl_beta: float | None = None,
) -> dict[str, float]:
    """Optimise the TGRPO loss on one group; returns metrics averaged over optimizer steps.

    A step whose loss or gradient norm is not finite is skipped (see :mod:`tgrpo.nonfinite`). With
    ``cfg.target_kl``, the iteration's remaining steps are skipped once a batch's KL to the rollout policy
    exceeds 1.5 x ``cfg.target_kl`` (see :mod:`tgrpo.kl_control`).

    Args:
        policy: the policy being trained.
        optimizer: its optimizer (over ``policy.trainable_parameters()``).
        group: the rollout (tokens, old log-probs, mask).
        advantages: [M, L] advantages (0 where masked).
        cfg: training options (schedule, epochs, clip, KL, ratio level, grad clipping).
        rng: shuffles the minibatch schedule.
        guard: skips and counts non-finite steps; None: a fresh one with ``cfg.max_nonfinite_skips``.
        kl_beta: the KL weight to use (the adaptive one of :func:`train`); None: ``cfg.kl_beta``.

    Returns:
        ``losses/*`` metrics (averaged over the applied steps; ``losses/nonfinite_skips`` counts the skipped
        ones, ``losses/optimizer_steps`` the applied ones, ``losses/early_stop`` is 1 when the target KL
        stopped the updates, ``losses/kl_beta`` the KL weight used) and ``time/forward_s`` (policy forward passes and loss) and ``time/update_s`` (backward,
        clipping, optimizer step).

    Raises:
        NonFiniteError: after ``cfg.max_nonfinite_skips`` skipped steps in a row.
    """
    if guard is None:
        guard = NonFiniteGuard.for_config(cfg, policy)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    m = group.num_envs
    weights_all = 1.0 / (m * np.maximum(group.lengths, 1))  # eq. 9: 1/M * 1/|o_i|
    adv_t = torch.as_tensor(advantages, dtype=torch.float32)
    t_fwd = time.perf_counter()
    beta = cfg.kl_beta if kl_beta is None else float(kl_beta)
    ref_all = _ref_log_probs(policy, group, cfg.temperature) if beta > 0 else None
    fwd_s = time.perf_counter() - t_fwd
    upd_s = 0.0
    sums: dict[str, float] = {}
    n_steps = 0
    stopped = False
    for _ in range(cfg.epochs):
        if stopped:
            break
        for env_idx, step_idx in _batches(group, cfg, rng):
            t0 = time.perf_counter()
            obs, instr = group.batch(env_idx, step_idx)
            tokens = group.tokens[env_idx, step_idx]
            logp, ent = policy.log_probs(obs, instr, tokens, cfg.temperature)
            dev = logp.device
            loss, metrics = tgrpo_loss(
                logp,
                group.old_logp[env_idx, step_idx].to(dev, logp.dtype),
                adv_t[env_idx, step_idx].to(dev),
                weights=torch.as_tensor(weights_all[env_idx], dtype=logp.dtype, device=dev),
                ref_logp=None if ref_all is None else ref_all[env_idx, step_idx].to(dev, logp.dtype),
                entropy=ent,
                clip_eps=cfg.clip_eps,
                kl_beta=beta,
                ratio_level=cfg.ratio_level,
            )
            t1 = time.perf_counter()
            if n_steps > 0 and kl_too_far(metrics["approx_kl"], cfg.target_kl):
                # the policy has moved too far from the one that collected the group: stop this iteration
                fwd_s += t1 - t0
                stopped = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if not guard.ok(loss.detach(), grad_norm, where=f"update step {n_steps + 1}"):
                optimizer.zero_grad(set_to_none=True)
                upd_s += time.perf_counter() - t1
                fwd_s += t1 - t0
                continue
            optimizer.step()
            upd_s += time.perf_counter() - t1
            fwd_s += t1 - t0
            metrics["loss"] = float(loss.detach())
            metrics["grad_norm"] = float(grad_norm)
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            n_steps += 1
    out = {f"losses/{k}": v / max(n_steps, 1) for k, v in sums.items()}
    out["losses/optimizer_steps"] = float(n_steps)
    out["losses/early_stop"] = float(stopped)
    out["losses/kl_beta"] = beta
    out["losses/nonfinite_skips"] = float(guard.take_count())
    out["time/forward_s"] = fwd_s
    out["time/update_s"] = upd_s
    return out


def train(
    env: Any,
    policy: TokenActionPolicy | None = None,
    config: TGRPOConfig | None = None,
    *,
    eval_fn: EvalHook | None = None,
) -> TrainResult:
    """Train ``policy`` with TGRPO on the vector env ``env`` (one group = ``env.num_envs`` envs).

    Args:
        env: any ``gymnasium.vector.VectorEnv`` with 7-D Box actions in [-1, 1]; rewards are whatever it
            returns, success is read from ``info[config.success_key]``.
        policy: a :class:`~tgrpo.policy.TokenActionPolicy`; None builds an
            :class:`~tgrpo.policy.MLPTokenPolicy` for ``env.single_observation_space``.
        config: options; None uses ``TGRPOConfig()``.
        eval_fn: evaluation hook ``eval_fn(policy, iteration) -> {name: value}``, called every
            ``config.eval_interval`` iterations and at the end; its values are logged under ``eval/``. None with
            ``eval_interval > 0`` runs :func:`tgrpo.evaluate` (greedy, ``num_envs`` episodes) on ``env``.

    Returns:
        A :class:`TrainResult` with the policy, the metrics history and the run directory.

    Raises:
        ConfigError: if the config does not fit the env (e.g. ``num_envs < 2``).
    """
    cfg = config if config is not None else TGRPOConfig()
    num_envs = int(getattr(env, "num_envs", 0))
    if not num_envs:
        raise ConfigError(
            f"env={env!r} is not a vector env (no num_envs). Fix: wrap it, e.g. "
            "gymnasium.vector.SyncVectorEnv([make_env] * M) with M >= 2."
        )
    cfg.validate(num_envs=num_envs)
    if policy is None:
        policy = MLPTokenPolicy.from_space(env.single_observation_space, seed=cfg.seed)
    if not isinstance(policy, TokenActionPolicy):
        missing = [
            n
            for n in (
                "sample",
                "log_probs",
                "ref_log_probs",
                "tokens_to_actions",
                "trainable_parameters",
                "state_dict",
                "load_state_dict",
            )
            if not hasattr(policy, n)
        ]
        raise TypeError(
            f"policy {type(policy).__name__} does not implement TokenActionPolicy; missing {missing}."
        )

    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy.trainable_parameters() returned no parameter that requires grad.")
    optimizer = torch.optim.AdamW(params, lr=cfg.resolve_lr(policy), weight_decay=cfg.weight_decay)

    start = 0
    env_steps = 0
    optimizer_steps = 0
    kl_beta = float(cfg.kl_beta)
    for stale in remove_stale_temp_files(ckpt_path):
        log.info("removed %s, the temporary file of a killed checkpoint write", stale)
    for line in recover_dir(out_dir / ADAPTER_DIR_NAME):
        log.info(line)
    if cfg.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        changed = {
            k for k, v in ckpt["config"].items() if k not in RESUMABLE_CHANGES and cfg.to_dict().get(k) != v
        }
        if changed:
            log.warning(
                "resuming with changed config fields %s; the run is no longer a pure continuation.",
                sorted(changed),
            )
        policy.load_state_dict(ckpt["policy"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        start = int(ckpt["iteration"]) + 1
        env_steps = int(ckpt.get("env_steps", 0))
        optimizer_steps = int(ckpt.get("optimizer_steps", 0))
        if cfg.target_ref_kl is not None:
            kl_beta = float(ckpt.get("kl_beta", kl_beta))
        update_rng = np.random.default_rng()
        update_rng.bit_generator.state = ckpt["update_rng"]
        _say(cfg, f"resumed from {ckpt_path} after iteration {start - 1}")
    else:
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        update_rng = np.random.default_rng(cfg.seed)

    logger = MetricsLogger(out_dir, cfg.log_formats, start_iteration=start)
    if eval_fn is None and cfg.eval_interval > 0:

        def eval_fn(p: TokenActionPolicy, k: int) -> dict[str, float]:
            return evaluate(env, p, episodes=num_envs, max_steps=cfg.max_steps)

    guard = NonFiniteGuard.for_config(cfg, policy)
    bar = progress_bar(cfg.progress_bar, cfg.iterations, start)
    last_ckpt: Path | None = ckpt_path if ckpt_path.exists() and start > 0 else None
    try:
        for k in range(start, cfg.iterations):
            t_it = time.perf_counter()
            # 1. roll out a group of M trajectories with the current policy (sampling)
            t0 = time.perf_counter()
            group = collect_group(
                env,
                policy,
                max_steps=cfg.max_steps,
                mode=cfg.rollout_mode,
                temperature=cfg.temperature,
                seed=cfg.seed + k * num_envs,
                success_key=cfg.success_key,
            )
            rollout_s = time.perf_counter() - t0
            env_steps += group.env_steps
            # 2. relative advantages: trajectory T_i and step S_i,t fused by eq. 8
            adv = compute_advantages(group, cfg)
            # 3. per-time-step (Algorithm 1) or minibatch updates of the clipped, KL-penalised objective
            row: dict[str, Any] = {"iteration": k}
            row.update(update_policy(policy, optimizer, group, adv, cfg, update_rng, guard, kl_beta=kl_beta))
            optimizer_steps += int(row["losses/optimizer_steps"])
            if "losses/ref_kl" in row:
                kl_beta = adapt_kl_beta(kl_beta, row["losses/ref_kl"], cfg.target_ref_kl)
            row.update(
                {
                    "charts/success_rate": float(group.success.mean()),
                    "charts/mean_return": float(group.returns.mean()),
                    "charts/episode_length": float(group.lengths.mean()),
                    "charts/group_length": float(group.length),
                    "charts/env_steps": float(env_steps),
                    "charts/optimizer_steps": float(optimizer_steps),
                    "charts/adv_abs_mean": float(np.abs(adv[group.mask]).mean()),
                    "time/rollout_s": rollout_s,
                    "time/sample_s": group.timings["sample_s"],
                    "time/env_s": group.timings["env_s"],
                }
            )
            # 4. evaluation hook
            if (
                eval_fn is not None
                and cfg.eval_interval > 0
                and ((k + 1) % cfg.eval_interval == 0 or k == cfg.iterations - 1)
            ):
                row.update({f"eval/{n}": float(v) for n, v in eval_fn(policy, k).items()})
            row["time/iteration_s"] = time.perf_counter() - t_it
            logger.write(row)
            # 5. checkpoint (atomic), after the metrics of the iteration are on disk
            if (
                cfg.checkpoint_interval and (k + 1) % cfg.checkpoint_interval == 0
            ) or k == cfg.iterations - 1:
                policy_state = policy.state_dict()
                check_finite_state(policy_state, f"the policy after iteration {k}")
                last_ckpt = save_checkpoint(
                    ckpt_path,
                    {
                        "iteration": k,
                        "env_steps": env_steps,
                        "optimizer_steps": optimizer_steps,
                        "kl_beta": kl_beta,
                        "policy": policy_state,
                        "optimizer": optimizer.state_dict(),
                        "rng": rng_state(),
                        "update_rng": update_rng.bit_generator.state,
                        "config": cfg.to_dict(),
                        "torch_version": torch.__version__,
                    },
                )
                if callable(getattr(policy, "save_pretrained", None)):  # e.g. a peft adapter, in its own format
                    write_dir_atomically(out_dir / ADAPTER_DIR_NAME, policy.save_pretrained)
            bar.update(1)
            bar.set_postfix(
                success=f"{row['charts/success_rate']:.2f}", ret=f"{row['charts/mean_return']:.2f}"
            )
            if (k + 1) % cfg.log_interval == 0 or k == cfg.iterations - 1:
                _say(cfg, _log_line(row, cfg.iterations))
    finally:
        bar.close()
        logger.close()
    if cfg.plot and logger.rows:
        if plot_training_curve(logger.rows, out_dir / "training_curve.png"):
            _say(cfg, f"training curve written to {out_dir / 'training_curve.png'}")
        else:
            _say(cfg, "matplotlib not installed: training curve skipped")
    return TrainResult(policy=policy, history=list(logger.rows), output_dir=out_dir, checkpoint=last_ckpt)


def _log_line(row: dict[str, Any], total: int) -> str:
    parts = [
        f"iter {row['iteration'] + 1}/{total}",
        f"success {row['charts/success_rate']:.2f}",
        f"return {row['charts/mean_return']:.3f}",
        f"len {row['charts/episode_length']:.0f}",
        f"loss {row.get('losses/loss', float('nan')):.4f}",
        f"kl {row.get('losses/ref_kl', float('nan')):.4f}",
        f"clip {row.get('losses/clip_fraction', float('nan')):.3f}",
        f"{row['time/iteration_s']:.2f}s",
    ]
    if "eval/success_rate" in row:
        parts.append(f"eval {row['eval/success_rate']:.2f}")
    return "tgrpo | " + " | ".join(parts)


def _say(cfg: TGRPOConfig, msg: str) -> None:
    log.info(msg)
    if cfg.progress_bar:
        from tqdm.auto import tqdm

        tqdm.write(msg, file=sys.stderr)
