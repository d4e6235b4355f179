"""Group-relative advantages of TGRPO (paper §3.2, eqs. 6-8).

All functions are pure: they take rewards as a NumPy array or a torch tensor and return the same kind
(a tensor keeps its device; float dtypes are kept, integer and bool inputs become float32/float64).

Conventions shared by every function here:

* A *group* is M trajectories of the same task; index ``i`` runs over the group, ``t`` over time.
* Standard deviations use ``n - 1`` in the denominator (Bessel's correction), as in eqs. 6-7.
* Where a standard deviation is 0 (every member of the group has the same value, for example an
  all-fail group) or fewer than two values are available, the normalised advantage is 0.

Example:
    >>> import numpy as np
    >>> step_advantages(np.array([[1.0, 2.0], [3.0, 2.0]]))
    array([[-0.70710678,  0.        ],
           [ 0.70710678,  0.        ]])
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Standard deviations at or below this value count as zero (all group members equal).
ZERO_STD_TOL = 1e-8


def _as_float(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name} must be a numpy array or a torch tensor of numbers, got {x!r}.")
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _check_finite(x: np.ndarray | torch.Tensor, name: str) -> None:
    finite = torch.isfinite(x).all().item() if isinstance(x, torch.Tensor) else bool(np.isfinite(x).all())
    if not finite:
        raise ValueError(
            f"{name} contains NaN or infinite values; rewards must be finite numbers. "
            "Check the reward wrapper of the environment."
        )


def _check_ndim(x: np.ndarray | torch.Tensor, ndim: int, name: str, shape_doc: str) -> None:
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape_doc}, got shape {tuple(x.shape)}.")


def _group_normalise(
    values: np.ndarray | torch.Tensor, valid: np.ndarray | torch.Tensor | None
) -> np.ndarray | torch.Tensor:
    """Normalise ``values`` along axis 0 with mean and n-1 std over ``valid`` entries.

    Args:
        values: [M, ...] values of the M group members.
        valid: [M, ...] bool, or None when all entries are valid.

    Returns:
        [M, ...] (values - mean) / std, 0 where the std is 0, fewer than 2 entries are valid, or the entry
        is invalid.
    """
    if isinstance(values, torch.Tensor):
        w = torch.ones_like(values) if valid is None else valid.to(values.dtype)
        n = w.sum(dim=0)
        mean = (values * w).sum(dim=0) / n.clamp(min=1)
        var = (((values - mean) * w) ** 2).sum(dim=0) / (n - 1).clamp(min=1)
        std = var.sqrt()
        ok = (n >= 2) & (std > ZERO_STD_TOL)
        out = torch.where(ok, (values - mean) / torch.where(ok, std, torch.ones_like(std)), 0.0)
        return out * w
    w = np.ones_like(values) if valid is None else np.asarray(valid, dtype=bool).astype(values.dtype)
    n = w.sum(axis=0)
    mean = (values * w).sum(axis=0) / np.maximum(n, 1)
    var = (((values - mean) * w) ** 2).sum(axis=0) / np.maximum(n - 1, 1)
    std = np.sqrt(var)
    ok = (n >= 2) & (std > ZERO_STD_TOL)
    out = np.where(ok, (values - mean) / np.where(ok, std, 1.0), 0.0)
    return (out * w).astype(values.dtype, copy=False)


def step_advantages(rewards: ArrayT, mask: ArrayT | None = None) -> ArrayT:
    """Step-level relative advantage S (eq. 6).

    ``S[i, t] = (R[i, t] - mean_i R[:, t]) / std_i R[:, t]`` with the n-1 std, computed per time step over the
    M trajectories of the group.

    Args:
        rewards: [M, L] reward of trajectory i at step t.
        mask: optional [M, L] bool (or 0/1), True where step t of trajectory i exists. Statistics at step t
            use only the valid entries; masked entries of the result are 0.

    Returns:
        [M, L] step advantages, same array type as ``rewards``.

    Raises:
        ValueError: if ``rewards`` is not 2-D, contains NaN/inf, or ``mask`` has another shape.
    """
    r = _as_float(rewards, "rewards")
    _check_ndim(r, 2, "rewards", "[M, L] (group members x time steps)")
    _check_finite(r, "rewards")
    valid = _check_mask(mask, r)
    return _group_normalise(r, valid)


def trajectory_advantages(returns: ArrayT) -> ArrayT:
    """Trajectory-level relative advantage T (eq. 7).

    ``T[i] = (R_i - mean R) / std R`` over the M trajectories of the group, n-1 std.

    Args:
        returns: [M] total reward of each trajectory.

    Returns:
        [M] trajectory advantages, same array type as ``returns``; all 0 when every return is equal.

    Raises:
        ValueError: if ``returns`` is not 1-D or contains NaN/inf.
    """
    r = _as_float(returns, "returns")
    _check_ndim(r, 1, "returns", "[M] (one total reward per trajectory)")
    _check_finite(r, "returns")
    return _group_normalise(r, None)


def tgrpo_advantages(rewards: ArrayT, alpha1: float, alpha2: float, mask: ArrayT | None = None) -> ArrayT:
    """Fused TGRPO advantage (eq. 8): ``Adv[i, t] = alpha1 * S[i, t] + alpha2 * T[i]``.

    T is computed from the per-trajectory sums ``R_i = sum_t R[i, t]`` (over valid steps only when a mask is
    given) and broadcast over the steps of trajectory i.

    Args:
        rewards: [M, L] reward of trajectory i at step t.
        alpha1: weight of the step advantage S (0 gives the trajectory-only variant).
        alpha2: weight of the trajectory advantage T (0 gives the step-only variant).
        mask: optional [M, L] bool, True where step t of trajectory i exists (trajectories of unequal
            length). Statistics use valid entries only; masked entries of the result are 0.

    Returns:
        [M, L] advantages, same array type as ``rewards``.

    Raises:
        ValueError: on bad shapes, NaN/inf rewards, a mismatched mask, or non-finite alphas.
    """
    for name, a in (("alpha1", alpha1), ("alpha2", alpha2)):
        if not np.isfinite(float(a)):
            raise ValueError(f"{name}={a!r} must be a finite number (the paper uses values in 0.3..10).")
    r = _as_float(rewards, "rewards")
    _check_ndim(r, 2, "rewards", "[M, L] (group members x time steps)")
    _check_finite(r, "rewards")
    valid = _check_mask(mask, r)
    s = _group_normalise(r, valid)
    totals = r.sum(1) if valid is None else (r * valid).sum(1)
    t = _group_normalise(totals, None)
    out = alpha1 * s + alpha2 * t[:, None]
    return out if valid is None else out * valid


def _check_mask(mask: np.ndarray | torch.Tensor | None, rewards: np.ndarray | torch.Tensor):
    """Validate a [M, L] mask against rewards; return it as a bool array of the rewards' kind or None."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(rewards.shape):
        raise ValueError(
            f"mask has shape {tuple(mask.shape)} but rewards have shape {tuple(rewards.shape)}; "
            "the mask must be [M, L] like the rewards, True where a step exists."
        )
    if isinstance(rewards, torch.Tensor):
        m = torch.as_tensor(mask, device=rewards.device)
        if m.dtype != torch.bool and not ((m == 0) | (m == 1)).all():
            raise ValueError("mask must be boolean or contain only 0 and 1.")
        return m.to(rewards.dtype)
    m = np.asarray(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    if m.dtype != np.bool_ and not np.isin(m, (0, 1)).all():
        raise ValueError("mask must be boolean or contain only 0 and 1.")
    return m.astype(rewards.dtype)
