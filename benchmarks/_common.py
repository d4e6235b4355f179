"""Shared helpers of the benchmark scripts: where results go, stamped with the machine and versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from libero_tgrpo import files
from libero_tgrpo.versions import machine, now, versions

RESULTS = Path(__file__).resolve().parent / "results"


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` plus versions, machine and timestamp to ``results/<name>.json``."""
    payload = {
        **payload,
        "versions": versions(),
        "machine": machine(),
        "date": now(),
    }
    return files.write_json(RESULTS / f"{name}.json", payload)


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
