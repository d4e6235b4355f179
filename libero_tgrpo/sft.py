"""Supervised fine-tuning (behaviour cloning) of any token-action policy on expert demonstrations.

The loss is the cross-entropy of the expert's action tokens under the policy (temperature 1), averaged
over the 7 tokens of each action and over the samples of a minibatch: the same objective OpenVLA is
fine-tuned with. It uses only :class:`tgrpo.TokenActionPolicy` methods (``log_probs``,
``trainable_parameters``), so it works for the built-in MLP, the vision policy and the Hugging Face adapter.

Example:
    >>> policy = tgrpo.MLPTokenPolicy(29, obs_keys=("state",))  # doctest: +SKIP
    >>> history = sft(policy, demos, SFTConfig(epochs=10))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from libero_tgrpo.demo_set import DemoSet
from libero_tgrpo.progress import progress_bar
from libero_tgrpo.stage_configs import SFTConfig

__all__ = ["SFTConfig", "sft", "token_cross_entropy", "demo_tokens", "freeze_reference"]


def demo_tokens(policy: Any, demos: DemoSet) -> np.ndarray:
    """The expert's actions as tokens of ``policy``: its own ``tokenizer`` when it has one, else the stored ones."""
    tokenizer = getattr(policy, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "encode"):
        return np.asarray(tokenizer.encode(demos.actions), dtype=np.int64)
    return np.asarray(demos.tokens, dtype=np.int64)


def _obs_batch(obs: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in obs.items()}


def token_cross_entropy(
    policy: Any, demos: DemoSet, *, batch_size: int = 2048, tokens: np.ndarray | None = None
) -> float:
    """Mean cross-entropy (nats per token) of the demonstrations' action tokens under ``policy``."""
    tokens = demo_tokens(policy, demos) if tokens is None else tokens
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, demos.num_steps, batch_size):
            idx = np.arange(s, min(s + batch_size, demos.num_steps))
            logp, _ = policy.log_probs(
                _obs_batch(demos.obs, idx), [demos.instruction] * idx.size, torch.as_tensor(tokens[idx]), 1.0
            )
            total += float(-logp.sum())
            count += int(logp.numel())
    return total / max(count, 1)


def sft(
    policy: Any,
    demos: DemoSet,
    config: SFTConfig | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, float]]:
    """Behaviour cloning: minimise the token cross-entropy of the expert actions.

    Args:
        policy: a :class:`tgrpo.TokenActionPolicy` whose observations match ``demos.obs``.
        demos: the demonstrations.
        config: options; None uses :class:`SFTConfig`'s defaults.
        progress: show a tqdm bar over epochs.
        log: called with a line every tenth of the epochs.

    Returns:
        One dict per epoch: ``epoch``, ``loss`` (mean training cross-entropy, nats per token),
        ``token_accuracy`` (argmax equals the expert token) and ``time_s``.
    """
    cfg = config or SFTConfig()
    if demos.num_steps == 0:
        raise ValueError("the demonstration set is empty: generate some with `libero-tgrpo demos`.")
    tokens_all = demo_tokens(policy, demos)
    params = [p for p in policy.trainable_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict[str, float]] = []
    bar = progress_bar(progress, cfg.epochs, "sft", "epoch")
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = rng.permutation(demos.num_steps)
        loss_sum, acc_sum, n = 0.0, 0.0, 0
        for s in range(0, order.size, cfg.batch_size):
            idx = np.sort(order[s : s + cfg.batch_size])
            tokens = torch.as_tensor(tokens_all[idx])
            obs = _obs_batch(demos.obs, idx)
            logp, _ = policy.log_probs(obs, [demos.instruction] * idx.size, tokens, 1.0)
            loss = -logp.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                greedy, _ = policy.sample(obs, [demos.instruction] * idx.size, 0.0)
                acc_sum += float((greedy.cpu() == tokens).float().sum())
            loss_sum += float(loss.detach()) * idx.size
            n += idx.size
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / n,
            "token_accuracy": acc_sum / (n * tokens_all.shape[1]),
            "time_s": time.perf_counter() - t0,
        }
        history.append(row)
        bar.update(1)
        if log is not None and ((epoch + 1) % max(1, cfg.epochs // 10) == 0 or epoch + 1 == cfg.epochs):
            log(f"sft | epoch {epoch + 1}/{cfg.epochs} | loss {row['loss']:.4f} | token acc "
                f"{row['token_accuracy']:.3f} | {row['time_s']:.2f}s")
    bar.close()
    return history


def freeze_reference(policy: Any) -> bool:
    """Make the policy's current weights its KL reference (the SFT policy is TGRPO's π_ref).

    Uses the policy's own ``reset_reference()`` when it has one (``HFVLAPolicy``: a frozen copy of the SFT
    LoRA adapter becomes the reference, not the base model under it); for :class:`tgrpo.MLPTokenPolicy`,
    copies the live network into its frozen reference copy.

    Returns:
        True (a reference was set).

    Raises:
        TypeError: for a policy that offers no way to set its reference: its KL term would silently pull
            towards something other than the SFT policy.
    """
    if hasattr(policy, "reset_reference"):
        policy.reset_reference()
        return True
    net, ref = getattr(policy, "net", None), getattr(policy, "ref", None)
    if isinstance(net, torch.nn.Module) and isinstance(ref, torch.nn.Module):
        ref.load_state_dict(net.state_dict())
        ref.requires_grad_(False)
        return True
    raise TypeError(
        f"{type(policy).__name__} has no reset_reference() and no net/ref pair, so the SFT policy cannot become "
        "its KL reference; give it a reset_reference() method that freezes its current weights as the reference."
    )
