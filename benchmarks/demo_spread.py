"""How much a demonstration set varies, and whether a cloned policy corrects a miss the way the expert does.

Behaviour cloning can only learn to correct what its demonstrations show being corrected. This script measures
both sides, from files only (no simulation):

* **spread of a set** (``.npz`` of ``libero-tgrpo demos``): where the object starts (std of its x and y over the
  episodes, mm), when the gripper closes (step), and where the end effector is relative to the object at that
  moment (std per axis, mm). A noise-free scripted expert on a task whose placements barely vary repeats one
  path: every episode closes at the same step, a fraction of a millimetre apart.
* **feedback gain of a policy** (``policy.safetensors`` / ``policy.pt``): at each demonstration state of the
  descent onto the object (gripper open, at most ``--descent-height`` above the grasp), the end effector is moved
  by ``dx`` in x (``eef_pos`` and ``target_minus_eef`` changed together) and the greedy x action is read.
  The gain is ``(a(+dx) - a(-dx)) / (2 dx)``, per metre of end-effector position, and positive when the policy
  pulls back towards the object. The expert's own gain is ``ExpertConfig.gain / POS_SCALE`` (30 per metre),
  until its action saturates at ``slow_speed``.

Usage:
    python -m benchmarks.demo_spread --demos outputs/demos/task2_n200_*.npz
    python -m benchmarks.demo_spread --demos D.npz --policies outputs/sft/policy.safetensors [--dx 0.01]
    ... --out benchmarks/results/demo_spread   # also writes demo_spread.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from libero_gym.env import STATE_LAYOUT

EEF_X = STATE_LAYOUT["eef_pos"].start
REL = STATE_LAYOUT["target_minus_eef"]
TARGET = STATE_LAYOUT["target_pos"]
GRIPPER = 6
"""Index of the gripper in an action (> 0: close)."""


def _episodes(demos: Any) -> list[slice]:
    ends = np.cumsum(demos.episode_lengths)
    return [slice(int(e - n), int(e)) for n, e in zip(demos.episode_lengths, ends)]


def close_steps(demos: Any) -> np.ndarray:
    """Per episode, the first step whose action closes the gripper (-1 when it never closes)."""
    out = []
    for ep in _episodes(demos):
        closed = np.flatnonzero(demos.actions[ep, GRIPPER] > 0)
        out.append(int(closed[0]) if closed.size else -1)
    return np.array(out)


def spread(demos: Any) -> dict[str, Any]:
    """The spread of one set: start position of the object, close step, end effector at the close."""
    state = demos.obs["state"]
    eps = _episodes(demos)
    starts = np.stack([state[ep.start, TARGET] for ep in eps])
    close = close_steps(demos)
    at_close = np.stack([state[ep.start + c, REL] for ep, c in zip(eps, close) if c >= 0])
    return {
        "episodes": len(eps),
        "steps": [int(demos.episode_lengths.min()), float(np.median(demos.episode_lengths)),
                  int(demos.episode_lengths.max())],
        "start_xy_std_mm": (1000 * starts[:, :2].std(0)).round(2).tolist(),
        "close_step": [int(close.min()), float(np.median(close)), int(close.max())],
        "close_rel_std_mm": (1000 * at_close.std(0)).round(2).tolist(),
        "close_rel_median_mm": (1000 * np.median(at_close, 0)).round(2).tolist(),
    }


def descent_states(demos: Any, height: float) -> np.ndarray:
    """Indices of the demonstration states in the last ``height`` metres of the descent (gripper still open)."""
    state = demos.obs["state"]
    idx = []
    for ep, c in zip(_episodes(demos), close_steps(demos)):
        if c < 0:
            continue
        z_close = state[ep.start + c, REL][2]
        for t in range(c):
            if state[ep.start + t, REL][2] - z_close >= -height:
                idx.append(ep.start + t)
    return np.array(idx, dtype=np.int64)


def feedback_gain(policy: Any, demos: Any, idx: np.ndarray, dx: float) -> np.ndarray:
    """Per state, the greedy x action's change per metre of end-effector x (positive: back towards the object)."""
    import torch

    x = demos.obs["state"][idx].astype(np.float32)
    actions = []
    for sign in (+1.0, -1.0):
        moved = x.copy()
        moved[:, EEF_X] += sign * dx  # the end effector moves by dx: the object is dx nearer in -x
        moved[:, REL.start] -= sign * dx
        with torch.no_grad():
            tokens, _ = policy.sample({"state": moved}, [demos.instruction] * len(idx), 0.0)
        actions.append(policy.tokenizer.decode(tokens.cpu().numpy())[:, 0])
    return -(actions[0] - actions[1]) / (2 * dx)


def main(argv: list[str] | None = None) -> int:
    from libero_gym.experts import POS_SCALE, ExpertConfig
    from libero_tgrpo.demo_set import load_demos
    from libero_tgrpo.files import write_json, write_text
    from libero_tgrpo.policies import load_policy

    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo_spread", description=__doc__.splitlines()[0])
    ap.add_argument("--demos", nargs="+", required=True, help="demonstration sets (.npz)")
    ap.add_argument("--policies", nargs="*", default=[], help="policy files to probe on the first set's descent")
    ap.add_argument("--dx", type=float, default=0.01, help="end-effector shift of the probe, m (default: %(default)s)")
    ap.add_argument("--descent-height", type=float, default=0.04,
                    help="probe the last this many metres of the descent (default: %(default)s)")
    ap.add_argument("--out", default=None, help="also write demo_spread.{md,json} to this directory")
    args = ap.parse_args(argv)
    if not 0 < args.dx <= 0.05 or args.descent_height <= 0:
        raise SystemExit(f"--dx {args.dx} must be in (0, 0.05] m and --descent-height {args.descent_height} > 0")
    sets = {Path(p).name: load_demos(p) for p in args.demos}
    rows = {name: spread(d) for name, d in sets.items()}
    lines = ["| demonstrations | episodes | steps (min/median/max) | object start x, y std (mm) | close step "
             "(min/median/max) | target - eef at close: median (mm) | std (mm) |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['episodes']} | {'/'.join(f'{v:g}' for v in r['steps'])} | "
                     f"{', '.join(f'{v:.2f}' for v in r['start_xy_std_mm'])} | "
                     f"{'/'.join(f'{v:g}' for v in r['close_step'])} | "
                     f"{', '.join(f'{v:.1f}' for v in r['close_rel_median_mm'])} | "
                     f"{', '.join(f'{v:.2f}' for v in r['close_rel_std_mm'])} |")
    gains: dict[str, Any] = {}
    if args.policies:
        probe = next(iter(sets.values()))
        idx = descent_states(probe, args.descent_height)
        expert = ExpertConfig().gain / POS_SCALE
        lines += ["", f"Feedback gain of the x action on {len(idx)} descent states of {next(iter(sets))} (shift "
                  f"±{1000 * args.dx:g} mm; the expert's: {expert:g} per metre until its action saturates):", "",
                  "| policy | median gain (1/m) | states with gain > 0 |", "|---|---|---|"]
        for p in args.policies:
            policy, _, _ = load_policy(p)
            g = feedback_gain(policy, probe, idx, args.dx)
            gains[p] = {"median": float(np.median(g)), "positive": float((g > 0).mean()), "states": int(len(idx))}
            lines.append(f"| {p} | {np.median(g):.1f} | {100 * (g > 0).mean():.0f}% |")
    print("\n".join(lines))
    if args.out:
        out = Path(args.out)
        cmd = "python -m benchmarks.demo_spread " + " ".join(argv if argv is not None else sys.argv[1:])
        write_text(out / "demo_spread.md", "# Demonstration spread and feedback gain\n\n" + "\n".join(lines) + "\n")
        write_json(out / "demo_spread.json", {"sets": rows, "gains": gains, "dx": args.dx,
                                              "descent_height": args.descent_height, "command": cmd.strip()})
        print(json.dumps({"wrote": str(out)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
