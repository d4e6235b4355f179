"""Where the pipeline writes results that belong to the repository (``benchmarks/results``)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["results_dir"]


def results_dir() -> Path:
    """``benchmarks/results`` of the source tree (created if missing)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path
