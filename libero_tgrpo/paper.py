"""Numbers from the TGRPO paper (arXiv 2506.08440) used as defaults and as the reference for our results.

Tasks use the paper's numbering (LIBERO-Object index + 1; Task4 is the bbq sauce task).
"""

from __future__ import annotations

__all__ = ["PAPER_ALPHAS", "PAPER_TABLE1", "PAPER_PPO_AVERAGE", "paper_alphas"]

PAPER_ALPHAS: dict[int, tuple[float, float]] = {
    1: (10.0, 1.0),
    2: (1.0, 0.1),
    3: (10.0, 5.0),
    4: (0.35, 0.65),
    5: (0.3, 0.7),
    6: (0.3, 0.7),
    7: (10.0, 1.0),
    8: (10.0, 1.0),
    9: (0.3, 0.7),
    10: (0.3, 0.7),
}
"""Per-task ``(alpha1, alpha2)`` of the paper (Table 3): weights of the step-level and trajectory-level
advantages in eq. 8. They are the default of ``libero-tgrpo train`` for each task."""

PAPER_TABLE1: dict[str, dict[int, float]] = {
    "sft": {1: 76, 2: 70, 3: 90, 4: 74, 5: 92, 6: 90, 7: 98, 8: 92, 9: 90, 10: 92},
    "tgrpo": {1: 78, 2: 86, 3: 92, 4: 76, 5: 98, 6: 94, 7: 98, 8: 98, 9: 94, 10: 96},
    "step_only": {1: 88, 2: 60, 3: 86, 4: 18, 5: 92, 6: 82, 7: 92, 8: 92, 9: 92, 10: 34},
    "traj_only": {1: 78, 2: 78, 3: 98, 4: 58, 5: 94, 6: 82, 7: 96, 8: 96, 9: 92, 10: 96},
}
"""Success rates (%) over 50 episodes per task of the paper's Table 1 (OpenVLA-7B, best of several runs)."""

PAPER_PPO_AVERAGE = 86.6
"""The paper reports PPO's average over the ten tasks only (%)."""


def paper_alphas(task: int) -> tuple[float, float]:
    """The paper's ``(alpha1, alpha2)`` for a task number 1-10.

    Raises:
        ValueError: for a task number outside 1-10.
    """
    if task not in PAPER_ALPHAS:
        raise ValueError(f"task={task!r} is not accepted: LIBERO-Object task numbers are 1-10.")
    return PAPER_ALPHAS[task]
