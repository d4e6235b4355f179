"""Success rate of the scripted expert on the 50 benchmark initial states of each LIBERO-Object task.

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


def _run_task(args: tuple[int, int]) -> dict:
    import gymnasium as gym

    import libero_gym  # noqa: F401
    from libero_gym.experts import ScriptedExpert, run_expert_episode

    task, n_states = args
    env = gym.make(f"LiberoObject-Task{task}-v0", obs_mode="state")
    expert = ScriptedExpert(task)
    successes, steps = [], []
    t0 = time.perf_counter()
    for k in range(n_states):
        rec = run_expert_episode(env, expert, options={"init_state": k})
        successes.append(bool(rec["success"]))
        steps.append(int(rec["steps"]))
    env.close()
    return {
        "task": task,
        "instruction": libero_gym.get_task(task).instruction,
        "episodes": n_states,
        "successes": int(sum(successes)),
        "success_rate": float(np.mean(successes)),
        "mean_steps_success": float(np.mean([s for s, ok in zip(steps, successes) if ok])) if any(successes) else None,
        "failed_states": [k for k, ok in enumerate(successes) if not ok],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="1-10", help="task numbers, e.g. '1-10' or '2,4,10'")
    ap.add_argument("--states", type=int, default=50, help="benchmark initial states per task (max 50)")
    ap.add_argument("--workers", type=int, default=2, help="parallel processes")
    a = ap.parse_args()
    tasks = parse_ints(a.tasks)
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for row in pool.map(_run_task, [(t, a.states) for t in tasks]):
            print(
                f"Task{row['task']:<2} {row['successes']}/{row['episodes']} "
                f"mean steps {row['mean_steps_success']}  failed states {row['failed_states']}",
                flush=True,
            )
            rows.append(row)
    total = sum(r["successes"] for r in rows) / sum(r["episodes"] for r in rows)
    write_json("expert_success", {"command": "python -m benchmarks.expert_success " + " ".join(
        f"--{k} {v}" for k, v in vars(a).items()), "rows": rows, "overall_success_rate": total})
    lines = [
        "# Scripted expert on the LIBERO-Object benchmark initial states",
        "",
        f"Command: `python -m benchmarks.expert_success --tasks {a.tasks} --states {a.states}`",
        "",
        "| task | instruction | success | mean steps (successes) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        steps = "-" if r["mean_steps_success"] is None else f"{r['mean_steps_success']:.0f}"
        lines.append(
            f"| Task{r['task']} | {r['instruction']} | {r['successes']}/{r['episodes']} "
            f"({100 * r['success_rate']:.0f}%) | {steps} |"
        )
    lines.append(f"| all | | {100 * total:.1f}% | |")
    (RESULTS / "expert_success.md").write_text("\n".join(lines) + "\n")
    print(f"overall {100 * total:.1f}%")


if __name__ == "__main__":
    main()
