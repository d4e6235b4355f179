"""Held-out selection again, on placements that start the arm like the benchmark states.

``benchmarks.heldout_select`` scored each RL run's candidates (start, snapshots, final) on held-out training
placements drawn with the arm at one fixed start pose, while the benchmark states spread the arm's start
(``libero_gym.arm_start``). This scores the same candidate files again with ``robot_init_noise`` set to the
benchmark's spread, chooses by the same rule (:func:`libero_tgrpo.selection.choose`) and gives the chosen policy's
benchmark rates: taken from the earlier unit when it chose the same candidate or the final one, from the table's SFT
cell for the start, else evaluated here. Its units have ``heldout_select``'s format, so ``python -m
benchmarks.heldout_select summary --out-dir DIR`` gives the table's goals with this selection::

    python -m benchmarks.heldout_rescore run --units outputs/heldout_select/units --roots /path/to/checkout
    python -m benchmarks.heldout_select summary --out-dir outputs/heldout_rescore --results-dir RES

Runs without snapshots (PPO's reruns keep only their selected policy) cannot be scored again and are listed as
failed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.heldout_select import TABLE, benchmark_rates, score
from benchmarks.paper_table import Cell, weights_digest
from libero_gym.arm_start import BENCHMARK_ROBOT_INIT_NOISE
from libero_tgrpo.files import write_json
from libero_tgrpo.selection import Candidate, choose
from libero_tgrpo.versions import machine, now, versions


def candidate_file(run_dir: Path, label: str) -> Path:
    """The weights of candidate ``label`` of a run with snapshots: the start, the final policy or
    ``snapshots/<label>``."""
    name = {"start": "init_policy.pt", "final": "policy.safetensors"}.get(label, f"snapshots/{label}.safetensors")
    if not (run_dir / name).is_file():
        raise FileNotFoundError(f"{run_dir}: no {name} for candidate {label} (a run without snapshots?)")
    return run_dir / name


def resolve(run_dir: str, roots: list[Path]) -> Path:
    """``run_dir`` itself when it is an existing absolute path, else under the first of ``roots`` that has it."""
    for root in [Path("/"), *roots] if Path(run_dir).is_absolute() else roots:
        if (root / run_dir).is_dir():
            return root / run_dir
    raise FileNotFoundError(f"run directory {run_dir} is under none of {', '.join(map(str, roots))}")


def rescore(unit: dict[str, Any], sft_cell: dict[str, Any], roots: list[Path], noise: float, out_dir: Path,
            quiet: bool) -> dict[str, Any]:
    import torch

    from libero_tgrpo.policies import load_policy

    torch.set_num_threads(1)
    task, seed, n = int(unit["task"]), int(unit["seed"]), int(unit["placements"])
    run_dir = resolve(unit["run_dir"], roots)
    env_kwargs = {"robot_init_noise": noise}
    scored = []
    for c in unit["candidates"]:
        path = candidate_file(run_dir, c["label"])
        policy = load_policy(path)[0]
        cache = out_dir / "starts" / f"{weights_digest(policy)}_p{n}_noise{noise:g}.json"
        if c["label"] == "start" and cache.is_file():
            s = json.loads(cache.read_text())
        else:
            s = score(policy, task, seed, n, quiet, env_kwargs=env_kwargs)
            if c["label"] == "start":
                write_json(cache, s)
        scored.append({"label": c["label"], "iteration": c["iteration"], "file": str(path), **s})
    chosen = choose([Candidate(s["label"], s["iteration"], s["placed_rate"], s["success_rate"]) for s in scored])
    if chosen.label == "start":
        selected = {"success_rate": sft_cell["success_rate"], "placed_rate": sft_cell["placed_rate"],
                    "source": "the SFT cell"}
    elif chosen.label == scored[-1]["label"]:
        selected = {**unit["final"], "source": "the earlier unit's final policy"}
    elif chosen.label == unit["chosen"]:
        selected = {**unit["selected"], "source": "the earlier unit's selected policy"}
    else:
        selected = benchmark_rates(load_policy(candidate_file(run_dir, chosen.label))[0], task, seed, quiet,
                                   f"benchmark evaluation of {chosen.label}")
    return {**{k: unit[k] for k in ("key", "task", "method", "seed", "regime", "run_dir", "final", "rerun",
                                    "final_reproduced") if k in unit},
            "placements": n, "robot_init_noise": noise, "candidates": scored, "chosen": chosen.label,
            "selected": selected, "before": {"chosen": unit["chosen"], "selected": unit["selected"],
                                             "candidates": unit["candidates"]},
            "versions": versions(), "machine": machine(), "date": now()}


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    roots = [Path(r) for r in args.roots.split(",") if r]
    cells = {Cell.of(c).key: c for c in json.loads(Path(args.table).read_text())["cells"]}
    methods = set(args.methods.split(","))
    units = [json.loads(p.read_text()) for p in sorted(Path(args.units).glob("*.json"))]
    todo = [u for u in units if u["method"] in methods and (not args.tasks or str(u["task"]) in args.tasks.split(","))
            and not (out_dir / "units" / f"{u['key']}.json").is_file()]
    print(f"{len(todo)} runs to score again", flush=True)
    for u in todo:
        try:
            res = rescore(u, cells[Cell.of(u).sft.key], roots, args.robot_init_noise, out_dir, args.quiet)
        except FileNotFoundError as e:
            write_json(out_dir / "failed" / f"{u['key']}.json", {"key": u["key"], "error": str(e)})
            print(f"{u['key']}: {e}", flush=True)
            continue
        write_json(out_dir / "units" / f"{u['key']}.json", res)
        print(f"{u['key']}: chose {res['chosen']} (was {u['chosen']}); benchmark placed "
              f"{100 * res['selected']['placed_rate']:.0f} (was {100 * u['selected']['placed_rate']:.0f})", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.heldout_rescore", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="score the candidates of heldout_select units again and choose (resumable)")
    r.add_argument("--units", required=True, help="a directory of heldout_select unit JSON files")
    r.add_argument("--roots", required=True, help="comma-separated directories the units' run_dir is relative to")
    r.add_argument("--table", default=str(TABLE))
    r.add_argument("--methods", default="tgrpo,step_only,traj_only")
    r.add_argument("--tasks", default=None, help="e.g. 2,4,10 (default: every unit's)")
    r.add_argument("--robot-init-noise", type=float, default=BENCHMARK_ROBOT_INIT_NOISE)
    r.add_argument("--out-dir", default="outputs/heldout_rescore")
    r.add_argument("--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    return cmd_run(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
