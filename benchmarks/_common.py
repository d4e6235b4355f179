"""Shared helpers of the benchmark scripts: where results go, stamped with the machine and versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from libero_tgrpo.versions import machine, now, versions

RESULTS = Path(__file__).resolve().parent / "results"


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus versions, machine and timestamp to ``results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "versions": versions(),
        "machine": machine(),
        "date": now(),
    }
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return path
