"""Digests of what a run produced, to check that a code change leaves behaviour bit for bit unchanged.

For an output directory of ``libero-tgrpo run`` or of ``python -m benchmarks.paper_table run``, prints:

* ``policies``: SHA-256 of every ``policy.pt``'s weights (tensor names, dtypes, shapes and bytes, in sorted
  name order; the file's own bytes also hold dates and versions, so they are not compared);
* ``episodes``: the success of every evaluation episode, in the order of the benchmark states, from each
  ``eval_*.json`` and each paper-table cell (``cells/*.json``).

Usage:
    python -m benchmarks.behaviour_digest OUTPUT_DIR [--out FILE]
    python -m benchmarks.behaviour_digest --compare BEFORE.json AFTER.json

``--compare`` exits with 1 when the two digests differ, listing what differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any


def state_dict_digest(state_dict: dict[str, Any]) -> str:
    """SHA-256 of a ``state_dict``: names, dtypes, shapes and values, in sorted name order."""
    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        arr = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def policy_file_digest(path: Path) -> str:
    """Digest of the weights in a ``policy.pt`` (read with ``weights_only=True``: no code runs)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    return state_dict_digest(payload["state_dict"])


def digest(out_dir: Path) -> dict[str, Any]:
    """``{"policies": {path: sha256}, "episodes": {path: [0/1 per episode]}}`` of an output directory."""
    policies = {str(p.relative_to(out_dir)): policy_file_digest(p) for p in sorted(out_dir.rglob("policy.pt"))}
    episodes: dict[str, list[int]] = {}
    for p in sorted(out_dir.rglob("eval_*.json")) + sorted(out_dir.rglob("eval.json")):
        res = json.loads(p.read_text())
        episodes[str(p.relative_to(out_dir))] = [int(e["success"]) for e in res["episodes"]]
    for p in sorted((out_dir / "cells").glob("*.json")):
        cell = json.loads(p.read_text())
        if "successes_per_state" in cell:
            episodes[str(p.relative_to(out_dir))] = [int(s) for s in cell["successes_per_state"]]
    return {"policies": policies, "episodes": episodes}


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two digests (empty when they are identical)."""
    diffs = []
    for section in ("policies", "episodes"):
        a, b = before.get(section, {}), after.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                diffs.append(f"{section}/{key}: {a.get(key)} != {b.get(key)}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.behaviour_digest", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", nargs="?", help="output directory of a run or of the paper table")
    ap.add_argument("--out", default=None, help="also write the digest to this JSON file")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two digest files")
    args = ap.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        diffs = compare(before, after)
        n = sum(len(before.get(s, {})) for s in ("policies", "episodes"))
        print("\n".join(diffs) if diffs else f"identical: {n} digests")
        return 1 if diffs else 0
    if not args.out_dir:
        ap.error("give an OUTPUT_DIR or --compare BEFORE AFTER")
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        ap.error(f"{out_dir} is not a directory")
    d = digest(out_dir)
    text = json.dumps(d, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
