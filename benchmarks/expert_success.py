"""The scripted expert on the 50 benchmark initial states of each LIBERO-Object task: both success metrics.

Each state is run twice:

- as an evaluation episode (``libero_tgrpo.envs.make_eval_envs``'s settings): it ends at LIBERO's success,
  then the env's release check (gripper opened, arm still for 20 steps) decides "placed";
- to the expert's own end (``terminate_on="is_placed"``): the episode goes on past LIBERO's success until
  the expert has let go of the object in an undisturbed basket (``is_placed``), within 280 steps.

It also records the largest basket motion seen in any episode, against the bounds of
``libero_gym.PlacementConfig``.

Usage:
    python -m benchmarks.expert_success [--tasks 1-10] [--states 50] [--workers 2]

Writes benchmarks/results/expert_success.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from benchmarks._common import RESULTS, parse_ints, write_json


def _episode(env, task: int, state: int) -> dict:
    from libero_gym.experts import ScriptedExpert, run_expert_episode

    rec = run_expert_episode(env, ScriptedExpert(task), options={"init_state": state})
    infos = rec["infos"]
    last = infos[-1]
    return {
        "success": any(bool(i["is_success"]) for i in infos),
        "ended_placed": bool(last["is_placed"]),
        "placed_after_release": bool(last["placed_after_release"]),
        "steps": int(rec["steps"]),
        "basket": [max(float(i[k]) for i in infos) for k in ("basket_rise", "basket_shift_xy", "basket_tilt_deg")],
    }


def _run_task(args: tuple[int, int]) -> dict:
    import gymnasium as gym

    import libero_gym

    task, n_states = args
    env_id = f"LiberoObject-Task{task}-v0"
    evaluation = gym.make(env_id, obs_mode="state", release_check=True)
    own_end = gym.make(env_id, obs_mode="state", terminate_on="is_placed", release_check=True)
    t0 = time.perf_counter()
    ev = [_episode(evaluation, task, k) for k in range(n_states)]
    own = [_episode(own_end, task, k) for k in range(n_states)]
    evaluation.close()
    own_end.close()
    success = np.array([e["success"] for e in ev])
    placed = success & np.array([e["placed_after_release"] for e in ev])
    own_placed = np.array([e["ended_placed"] for e in own])
    basket = np.max([e["basket"] for e in ev + own], axis=0)
    steps = [e["steps"] for e in ev if e["success"]]
    return {
        "task": task,
        "instruction": libero_gym.get_task(task).instruction,
        "episodes": n_states,
        "successes": int(success.sum()),
        "placed": int(placed.sum()),
        "own_end_placed": int(own_placed.sum()),
        "success_rate": float(success.mean()),
        "placed_rate": float(placed.mean()),
        "mean_steps_success": float(np.mean(steps)) if steps else None,
        "mean_steps_own_end": float(np.mean([e["steps"] for e, ok in zip(own, own_placed) if ok]))
        if own_placed.any()
        else None,
        "failed_states": [k for k in range(n_states) if not success[k]],
        "not_placed_states": [k for k in range(n_states) if not placed[k]],
        "own_end_not_placed_states": [k for k in range(n_states) if not own_placed[k]],
        "max_basket_rise_m": float(basket[0]),
        "max_basket_shift_xy_m": float(basket[1]),
        "max_basket_tilt_deg": float(basket[2]),
        "seconds": time.perf_counter() - t0,
    }


def _pct(n: int, total: int) -> str:
    return f"{n}/{total} ({100 * n / total:.0f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="1-10", help="task numbers, e.g. '1-10' or '2,4,10'")
    ap.add_argument("--states", type=int, default=50, help="benchmark initial states per task (max 50)")
    ap.add_argument("--workers", type=int, default=2, help="parallel processes")
    a = ap.parse_args()
    from libero_gym import PlacementConfig

    tasks = parse_ints(a.tasks)
    command = f"python -m benchmarks.expert_success --tasks {a.tasks} --states {a.states} --workers {a.workers}"
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for row in pool.map(_run_task, [(t, a.states) for t in tasks]):
            print(
                f"Task{row['task']:<2} LIBERO {row['successes']}/{row['episodes']} placed {row['placed']} "
                f"own end placed {row['own_end_placed']}  basket rise {row['max_basket_rise_m']:.4f} m "
                f"shift {row['max_basket_shift_xy_m']:.4f} m tilt {row['max_basket_tilt_deg']:.2f} deg",
                flush=True,
            )
            rows.append(row)
    n = sum(r["episodes"] for r in rows)
    totals = {key: sum(r[key] for r in rows) for key in ("successes", "placed", "own_end_placed")}
    bounds = PlacementConfig()
    write_json("expert_success", {"command": command, "rows": rows, "episodes": n, **totals,
                                  "overall_success_rate": totals["successes"] / n,
                                  "overall_placed_rate": totals["placed"] / n,
                                  "placement_bounds": vars(bounds)})
    lines = [
        "# Scripted expert on the LIBERO-Object benchmark initial states",
        "",
        f"Command: `{command}`",
        "",
        "- **LIBERO success**: LIBERO's predicate reached (the evaluation protocol's episode end).",
        "- **placed**: LIBERO success, then the release check (gripper opened, arm still for "
        f"{bounds.release_steps} steps) leaves the object in an undisturbed basket, no finger touching it.",
        "- **placed, expert's own release**: the episode goes on past LIBERO's success (`terminate_on=\"is_placed\"`)"
        " and ends once the expert has let go in an undisturbed basket, within 280 steps.",
        f"- **max basket motion**: the largest rise / horizontal shift / tilt of the basket in any of the task's "
        f"episodes; a basket counts as disturbed above {100 * bounds.basket_max_rise:.0f} cm / "
        f"{100 * bounds.basket_max_shift_xy:.0f} cm / {bounds.basket_max_tilt_deg:.0f} deg.",
        "",
        "| task | instruction | LIBERO success | placed | placed, expert's own release | mean steps to LIBERO "
        "success | max basket motion (rise cm / shift cm / tilt deg) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        steps = "-" if r["mean_steps_success"] is None else f"{r['mean_steps_success']:.0f}"
        lines.append(
            f"| Task{r['task']} | {r['instruction']} | {_pct(r['successes'], r['episodes'])} | "
            f"{_pct(r['placed'], r['episodes'])} | {_pct(r['own_end_placed'], r['episodes'])} | {steps} | "
            f"{100 * r['max_basket_rise_m']:.2f} / {100 * r['max_basket_shift_xy_m']:.2f} / "
            f"{r['max_basket_tilt_deg']:.1f} |"
        )
    lines.append(
        f"| all | | {_pct(totals['successes'], n)} | {_pct(totals['placed'], n)} | "
        f"{_pct(totals['own_end_placed'], n)} | | |"
    )
    (RESULTS / "expert_success.md").write_text("\n".join(lines) + "\n")
    print(f"overall LIBERO {totals['successes']}/{n}, placed {totals['placed']}/{n}, own end {totals['own_end_placed']}/{n}")


if __name__ == "__main__":
    main()
