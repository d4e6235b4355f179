"""Do held-out training placements predict the benchmark states? The same policies scored on both.

Settings and selected policies are chosen on held-out training placements (``libero_tgrpo.selection``), never on
the 50 benchmark states. That is only sound if a policy scores about the same on both. A drawn placement starts
the arm at robosuite's fixed pose, while LIBERO's benchmark states start it with about 0.02 rad of Gaussian noise
per joint (``libero_gym.arm_start.BENCHMARK_ROBOT_INIT_NOISE``). This scores each given policy greedily, with the
evaluation protocol (280 steps, release check), on three scene sets: the benchmark states, the held-out placements
as drawn today, and the same placements with the benchmark's arm noise (``robot_init_noise``)::

    python -m benchmarks.heldout_gap run --policy t1_tgrpo_s0=1:outputs/pt1/runs/task1_seed0/tgrpo/policy.pt ...
    python -m benchmarks.heldout_gap summary

One JSON file per policy under ``--out-dir`` (``units/<label>.json``), so a stopped run goes on where it left
off; ``summary`` writes ``benchmarks/results/heldout_gap/heldout_gap.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from libero_gym.arm_start import BENCHMARK_ROBOT_INIT_NOISE
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.selection import HELDOUT_PLACEMENT_OFFSET
from libero_tgrpo.versions import machine, now, versions

RESULTS = Path(__file__).resolve().parent / "results" / "heldout_gap"
SETS = ("benchmark", "heldout", "heldout_noise")
SET_LABELS = {"benchmark": "benchmark states", "heldout": "held-out, fixed arm start",
              "heldout_noise": f"held-out, arm noise {BENCHMARK_ROBOT_INIT_NOISE:g}"}


def parse_policy(text: str) -> tuple[str, int, Path]:
    """``LABEL=TASK:PATH`` as ``(label, task, path)``; refuses a malformed spec, a task outside 1-10 or a
    missing file before anything runs."""
    label, sep, rest = text.partition("=")
    task, sep2, path = rest.partition(":")
    if not (sep and sep2 and label and task.strip().isdigit() and path):
        raise argparse.ArgumentTypeError(f"--policy {text!r} is not accepted: give LABEL=TASK:PATH "
                                         f"(e.g. t1_tgrpo_s0=1:outputs/run/tgrpo/policy.pt)")
    if not label.replace("_", "").replace("-", "").isalnum():
        raise argparse.ArgumentTypeError(f"label {label!r} is not accepted: use letters, digits, '_' and '-'")
    if not 1 <= int(task) <= 10:
        raise argparse.ArgumentTypeError(f"task {task!r} is not accepted: give 1-10")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"policy file {path!r} does not exist")
    return label, int(task), Path(path)


def score(policy: Any, task: int, placements: int) -> dict[str, dict[str, Any]]:
    """Greedy LIBERO success and placed of ``policy`` on each of :data:`SETS`."""
    from libero_tgrpo.envs import make_eval_envs
    from libero_tgrpo.evaluation import evaluate_benchmark
    from libero_tgrpo.selection import score_heldout

    out: dict[str, dict[str, Any]] = {}
    for name in SETS:
        t0 = time.perf_counter()
        if name == "benchmark":
            envs = make_eval_envs(task, 2)
            try:
                res = evaluate_benchmark(envs, policy, progress=False)
            finally:
                envs.close()
        else:
            noise = BENCHMARK_ROBOT_INIT_NOISE if name == "heldout_noise" else 0.0
            res = score_heldout(policy, task, placements, env_kwargs={"robot_init_noise": noise})
        s = res["summary"]
        out[name] = {"success_rate": s["success_rate"], "placed_rate": s["placed_rate"],
                     "episodes": len(res["episodes"]), "seconds": round(time.perf_counter() - t0, 1)}
    return out


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    from libero_tgrpo.policies import load_policy

    torch.set_num_threads(1)
    units = Path(args.out_dir) / "units"
    for label, task, path in args.policy:
        dest = units / f"{label}.json"
        if dest.is_file():
            print(f"{label}: done already ({dest})")
            continue
        policy, _, _ = load_policy(path)
        sets = score(policy, task, args.placements)
        write_json(dest, {"label": label, "task": task, "policy_file": str(path), "placements": args.placements,
                          "sets": sets, "versions": versions(), "machine": machine(), "date": now()})
        print(f"{label}: " + ", ".join(f"{n} {100 * v['placed_rate']:.0f}% placed" for n, v in sets.items()),
              flush=True)
    return 0


def load_units(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / "units").glob("*.json"))]


def gaps(units: list[dict[str, Any]], metric: str = "placed_rate") -> dict[str, dict[str, float]]:
    """Per held-out set: mean signed and mean absolute difference from the benchmark states, in points."""
    out = {}
    for name in SETS[1:]:
        d = np.array([100 * (u["sets"][name][metric] - u["sets"]["benchmark"][metric]) for u in units])
        out[name] = {"mean": float(d.mean()), "mean_abs": float(np.abs(d).mean()), "n": len(d)}
    return out


def cmd_summary(args: argparse.Namespace) -> int:
    units = load_units(Path(args.out_dir))
    if not units:
        raise SystemExit(f"no units under {args.out_dir}/units: run `python -m benchmarks.heldout_gap run` first")
    res = Path(args.results_dir)
    g = {m: gaps(units, m) for m in ("placed_rate", "success_rate")}
    n = units[0]["placements"]
    lines = [
        "# Held-out placements against the benchmark states",
        "",
        f"Each policy scored greedily with the evaluation protocol on the 50 benchmark states and on {n} held-out "
        f"training placements (placement seeds {HELDOUT_PLACEMENT_OFFSET} + j), drawn as today (the arm at its fixed "
        f"start) and with the benchmark states' arm noise ({BENCHMARK_ROBOT_INIT_NOISE:g} rad per joint). "
        "Placed / LIBERO success, %.",
        "",
        "| policy | task | " + " | ".join(SET_LABELS[s] for s in SETS) + " |",
        "|---|---|" + "---|" * len(SETS),
    ]
    for u in units:
        cells = [f"{100 * u['sets'][s]['placed_rate']:.0f} / {100 * u['sets'][s]['success_rate']:.0f}" for s in SETS]
        lines.append(f"| {u['label']} | T{u['task']} | " + " | ".join(cells) + " |")
    lines += ["", "Difference from the benchmark states, points, over the policies above (mean signed; mean absolute):",
              ""]
    for m, label in (("placed_rate", "placed"), ("success_rate", "LIBERO success")):
        for s in SETS[1:]:
            lines.append(f"- {label}, {SET_LABELS[s]}: {g[m][s]['mean']:+.1f}; {g[m][s]['mean_abs']:.1f} "
                         f"({g[m][s]['n']} policies)")
    lines += ["", f"Command: `python -m benchmarks.heldout_gap run --policy LABEL=TASK:PATH ... --placements {n}`, then "
              "`python -m benchmarks.heldout_gap summary`.", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in units[0]["versions"].items()),
              f"Machine: {units[0]['machine'].get('cpu_model')} ({units[0]['machine'].get('cpu_count')} cores).", "",
              "![held-out against benchmark](heldout_gap.png)", ""]
    write_text(res / "heldout_gap.md", "\n".join(lines))
    write_json(res / "heldout_gap.json", {"units": units, "gaps": g, "sets": SET_LABELS})
    _plot(units, res / "heldout_gap.png")
    print(f"wrote {res}/heldout_gap.md")
    return 0


def _plot(units: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    bench = [100 * u["sets"]["benchmark"]["placed_rate"] for u in units]
    for s, marker in (("heldout", "o"), ("heldout_noise", "s")):
        ax.scatter(bench, [100 * u["sets"][s]["placed_rate"] for u in units], marker=marker, label=SET_LABELS[s],
                   alpha=0.8)
    ax.plot([0, 100], [0, 100], "k--", lw=0.8)
    ax.set_xlabel("placed on the 50 benchmark states (%)")
    ax.set_ylabel("placed on held-out placements (%)")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.heldout_gap", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="score policies on the benchmark states and the held-out placements")
    r.add_argument("--policy", action="append", type=parse_policy, required=True, metavar="LABEL=TASK:PATH")
    r.add_argument("--placements", type=int, default=50, help="held-out placements per set (default 50)")
    r.add_argument("--out-dir", default="outputs/heldout_gap")
    s = sub.add_parser("summary", help="tables and plot from the units")
    s.add_argument("--out-dir", default="outputs/heldout_gap")
    s.add_argument("--results-dir", default=str(RESULTS))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "run" and args.placements < 1:
        raise SystemExit(f"--placements {args.placements} is not accepted: give 1 or more")
    return cmd_run(args) if args.cmd == "run" else cmd_summary(args)


if __name__ == "__main__":
    raise SystemExit(main())
