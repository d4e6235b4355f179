"""Keeping non-finite numbers out of the weights and the checkpoints.

A too large learning rate, rewards of a huge scale or an overflowing ratio gives a loss or gradient of ``nan``
or ``inf``; one optimizer step with it turns every weight into ``nan``. The trainers (``tgrpo.train`` and
``tgrpo.baselines.train_ppo``) therefore ask a :class:`NonFiniteGuard` before each optimizer step: a step
whose loss or gradient norm is not finite is skipped (gradients dropped, weights and optimizer state
untouched) and counted in the metrics as ``losses/nonfinite_skips``; after ``max_nonfinite_skips`` skipped
steps in a row (a config field) training stops with :class:`NonFiniteError`, the last checkpoint being the
last good one. :func:`check_finite_state` is the last line of defence before a checkpoint is written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["NonFiniteError", "NonFiniteGuard", "check_finite_state"]


class NonFiniteError(FloatingPointError):
    """Training produced non-finite losses or gradients too many steps in a row, or non-finite weights."""


class NonFiniteGuard:
    """Decides, step by step, whether an optimizer step may be applied.

    Args:
        max_in_a_row: raise :class:`NonFiniteError` when this many steps in a row were skipped.
        hint: appended to the error message (what the user can change, e.g. the learning rate).

    Attributes:
        skipped: steps skipped since the last :meth:`take_count`.
        in_a_row: steps skipped in a row up to now (reset by an applied step).
    """

    def __init__(self, max_in_a_row: int, hint: str = "") -> None:
        self.max_in_a_row = int(max_in_a_row)
        self.hint = hint
        self.skipped = 0
        self.in_a_row = 0

    @classmethod
    def for_config(cls, cfg: Any, policy: Any) -> NonFiniteGuard:
        """A guard with ``cfg.max_nonfinite_skips`` and a hint naming the config's learning rate and clipping.

        Args:
            cfg: a ``TGRPOConfig`` or ``PPOConfig`` (``lr``, ``max_grad_norm``, ``max_nonfinite_skips``).
            policy: the policy (its ``recommended_lr`` when ``cfg.lr`` is None).
        """
        lr = cfg.lr if cfg.lr is not None else getattr(policy, "recommended_lr", None)
        hint = (
            f"Lower the learning rate (lr={lr}) or max_grad_norm (={cfg.max_grad_norm}), check the scale of "
            f"the rewards, or raise max_nonfinite_skips (={cfg.max_nonfinite_skips}) to tolerate more."
        )
        return cls(cfg.max_nonfinite_skips, hint=hint)

    def ok(self, loss: torch.Tensor | float, grad_norm: torch.Tensor | float, where: str = "") -> bool:
        """True when the step may be applied; False (and counted) when the loss or gradient norm is not finite.

        Args:
            loss: the step's loss.
            grad_norm: the global gradient norm before clipping (``clip_grad_norm_``'s return value).
            where: named in the error message, e.g. ``"iteration 3"``.

        Raises:
            NonFiniteError: on the ``max_in_a_row``-th skipped step in a row.
        """
        loss_v, norm_v = float(loss), float(grad_norm)
        if math.isfinite(loss_v) and math.isfinite(norm_v):
            self.in_a_row = 0
            return True
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= self.max_in_a_row:
            raise NonFiniteError(
                f"{self.in_a_row} optimizer steps in a row had a non-finite loss or gradient (last: loss={loss_v}, "
                f"grad_norm={norm_v}{', ' + where if where else ''}); none of them was applied, so the weights and "
                f"the last checkpoint are from before them. {self.hint}".rstrip()
            )
        return False

    def take_count(self) -> int:
        """Steps skipped since the previous call (for the metrics), and reset that count."""
        n, self.skipped = self.skipped, 0
        return n


def check_finite_state(state: Mapping[str, Any], what: str) -> None:
    """Raise :class:`NonFiniteError` if a floating-point tensor of ``state`` (a state dict) holds nan or inf.

    Args:
        state: ``{name: tensor}``; other values are ignored.
        what: what the state is, for the message (e.g. ``"the policy"``).
    """
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise NonFiniteError(
                f"{what} has non-finite values in {name!r}; it was not saved, so the last checkpoint is the "
                "last good one."
            )
