"""The main job's figure: the training curve of TGRPO next to the benchmark success before and after."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["plot_main_job"]


def _smooth(values: Sequence[float], window: int = 5) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if v.size < window:
        return v
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, v[0]), v])
    return np.convolve(padded, kernel, mode="valid")


def plot_main_job(
    rows: Sequence[dict[str, Any]],
    bars: Sequence[tuple[str, float, float | None, float | None]],
    path: str | os.PathLike,
    title: str = "",
) -> bool:
    """Write a 4-panel PNG: group return, time to the group's first success, KL to SFT, benchmark success.

    Args:
        rows: TGRPO metric rows (``metrics.jsonl``), one per iteration.
        bars: ``(label, LIBERO success rate in [0, 1], placed rate in [0, 1] or None, paper's success rate
            in % or None)`` per policy.
        path: PNG file to write.
        title: figure title.

    Returns:
        True if written, False without matplotlib.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(15, 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    its = [r["iteration"] + 1 for r in rows]
    panels = (
        ("charts/mean_return", "mean staged return of the group"),
        ("charts/episode_length", "steps to the group's first success"),
        ("losses/ref_kl", "KL to the SFT policy (per action)"),
    )
    for ax, (key, label) in zip(axes[:3], panels, strict=True):
        vals = [r.get(key, float("nan")) for r in rows]
        ax.plot(its, vals, marker=".", alpha=0.4, label="per iteration")
        if len(vals) >= 5:
            ax.plot(its, _smooth(vals), label="moving average (5)")
        ax.set_xlabel("TGRPO iteration")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    ax = axes[3]
    x = np.arange(len(bars))
    colors = ["tab:gray", "tab:green", "tab:blue", "tab:orange"][: len(bars)]
    libero = [100 * b[1] for b in bars]
    placed = [None if b[2] is None else 100 * b[2] for b in bars]
    ax.bar(x - 0.18, libero, 0.36, color=colors, label="LIBERO success")
    ax.bar(x + 0.18, [0 if p is None else p for p in placed], 0.36, color=colors, alpha=0.45, hatch="//",
           label="placed")
    for i, (v, p) in enumerate(zip(libero, placed)):
        ax.text(i - 0.18, v + 2, f"{v:.0f}%", ha="center", fontsize=8)
        ax.text(i + 0.18, (p or 0) + 2, "n/a" if p is None else f"{p:.0f}%", ha="center", fontsize=8)
    paper = [b[3] for b in bars]
    if any(p is not None for p in paper):
        ax.scatter([i - 0.18 for i, p in enumerate(paper) if p is not None], [p for p in paper if p is not None],
                   marker="_", s=200, color="black", zorder=3, label="paper (OpenVLA-7B, LIBERO)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_xticks(x)
    ax.set_xticklabels([b[0] for b in bars])
    ax.set_ylim(0, 115)
    ax.set_title("success on the 50 benchmark states", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    return True
