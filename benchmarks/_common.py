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


def parse_ints(text: str) -> list[int]:
    """``"1-10"``, ``"2,4,10"`` or a mix (``"0-2,7"``) as a list of ints."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    return out
