"""Shared helpers of the benchmark scripts: where results go, stamped with the machine and versions."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
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


def run_in_order(
    todo: Sequence[Any],
    run: Callable[[Any], dict[str, Any]],
    record: Callable[[Any, dict[str, Any] | None, str | None], None],
    *,
    label: Callable[[Any], str],
    max_n: int | None = None,
    time_budget_min: float | None = None,
) -> int:
    """Run the units of a resumable plan one after another in this process; returns how many were started.

    After each unit, ``record(unit, payload, None)``; for a unit that raised, its traceback is printed and
    ``record(unit, None, "Type: message")``, and the plan goes on. No unit starts after ``max_n`` units or
    ``time_budget_min`` minutes (the same command continues the plan).
    """
    start = time.perf_counter()
    ran = 0
    for unit in todo:
        if max_n is not None and ran >= max_n:
            break
        if time_budget_min is not None and time.perf_counter() - start > 60 * time_budget_min:
            print("time budget reached; run the same command again to continue", flush=True)
            break
        print(f"--- {label(unit)}", flush=True)
        ran += 1
        try:
            payload = run(unit)
        except Exception as e:  # noqa: BLE001 - a failed unit is recorded and the plan goes on
            traceback.print_exc()
            record(unit, None, f"{type(e).__name__}: {e}")
            continue
        record(unit, payload, None)
    return ran
