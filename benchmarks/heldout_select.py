"""Held-out selection (``libero_tgrpo.selection``) applied to the paper table's finished runs.

A table cell trained with ``select = "final"`` kept its snapshots (``snapshots/iter_NNNN.safetensors``, every 10
iterations) and its start (``init_policy.pt``, the SFT policy). Scoring those on the held-out placements is what a
run with ``select = "heldout"`` does during training (the same weights, placements and greedy evaluation), so this
command gives each cell's selected policy without training again:

1. find the cell's run directory under one of ``--runs`` (its start must have the cell's SFT digest, and its final
   policy must have been saved shortly before the cell's date, so that it is the cell's run and not an older one);
2. score the start, the snapshots at the selection points (:func:`libero_tgrpo.selection.selection_iterations`)
   and the final policy on ``--placements`` held-out placements;
3. choose (:func:`libero_tgrpo.selection.choose`); evaluate the chosen policy on the benchmark states when it is a
   snapshot (the start's and the final policy's benchmark results are the table's SFT and RL cells).

One JSON per cell under ``--out-dir`` (resumable); ``summary`` writes the comparison, final against selected, with
the table's goals computed both ways, to ``--results-dir``. Cells without snapshots (PPO's) are trained again with
``select='heldout'`` (``--rerun``), from their own SFT policy at their own protocol; a rerun whose final policy has
the cell's weights (the runs are deterministic on one machine) takes the cell's benchmark rates as its final ones.

Usage:
    python -m benchmarks.heldout_select run --runs /path/a/outputs/pt,/path/b/outputs/pt --regime paper
    python -m benchmarks.heldout_select run --runs ... --regime paper --methods ppo --rerun
    python -m benchmarks.heldout_select summary --out-dir outputs/heldout_select
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._common import parse_ints, run_in_order
from benchmarks.paper_table import METHOD_ORDER, REGIMES, Cell, goals, weights_digest
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.selection import HELDOUT_ROBOT_INIT_NOISE, Candidate, choose, selection_iterations

DEFAULT_OUT = "outputs/heldout_select"
RESULTS = Path(__file__).resolve().parent / "results" / "heldout_selection"
TABLE = Path(__file__).resolve().parent / "results" / "paper_table_rerun" / "paper_table.json"
PLACEMENTS = 30
"""Held-out placements per candidate (the tuning sweep's number)."""
POINTS = 3
"""Selection points during training (``PipelineConfig.select_points``' default)."""
PPO_PROTOCOL = ("env_step_budget", "value_max_grad_norm", "normalize_value_targets")
"""The PPO options a cell's recorded protocol holds, which a rerun of it takes (with its iteration cap)."""
MAX_SAVE_TO_CELL_S = 1800
"""A run directory belongs to a cell when its final policy was saved at most this long before the cell's date."""


def _parse_date(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def find_run(cell: dict[str, Any], roots: list[Path]) -> tuple[Path, float]:
    """The run directory of an RL cell among ``roots`` (``<root>/runs/task<T>_seed<S>[_paper]/<method>``) and the
    seconds from its final policy's save to the cell's date.

    Raises:
        FileNotFoundError: when no directory has the cell's start and a final policy saved just before it.
    """
    from libero_tgrpo.policies import load_policy

    c = Cell.of(cell)
    want = (cell.get("sft_policy") or {}).get("weights_sha256")
    found: list[tuple[float, Path]] = []
    for root in roots:
        d = c.run_dir(root) / c.method
        meta = d / "policy.json"
        if not (meta.is_file() and (d / "init_policy.pt").is_file()):
            continue
        gap = _parse_date(cell["date"]) - _parse_date(json.loads(meta.read_text())["info"]["saved"])
        if not 0 <= gap <= MAX_SAVE_TO_CELL_S:
            continue
        if want is not None and weights_digest(load_policy(d / "init_policy.pt")[0]) != want:
            continue
        found.append((gap, d))
    if not found:
        raise FileNotFoundError(f"{c.label}: no run directory under {', '.join(map(str, roots))} with its SFT start "
                                f"and a final policy saved within {MAX_SAVE_TO_CELL_S} s before {cell['date']}")
    gap, d = min(found)
    return d, gap


def candidate_files(run_dir: Path, iterations: int, points: int = POINTS) -> list[tuple[str, int, Path]]:
    """``(label, iteration, file)`` of the start, the snapshots at the selection points and the final policy."""
    its = selection_iterations(iterations, points)
    out = [("start", 0, run_dir / "init_policy.pt")]
    for n in its[:-1]:
        out.append((f"iter_{n:04d}", n, run_dir / "snapshots" / f"iter_{n:04d}.safetensors"))
    out.append(("final", its[-1], run_dir / "policy.safetensors"))
    missing = [str(p) for _, _, p in out if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: no {', '.join(missing)} (snapshots every 10 iterations are needed)")
    return out


def score(policy: Any, task: int, seed: int, placements: int, quiet: bool, max_steps: int | None = None,
          env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """The held-out score of one candidate, as a run with ``select='heldout'`` computes it (``max_steps``: the
    evaluation's step cap, None for the pipeline's default; ``env_kwargs``: passed to the envs)."""
    from libero_tgrpo.selection import score_heldout

    t0 = time.perf_counter()
    res = score_heldout(policy, task, placements, max_steps=max_steps, num_envs=2, seed=seed, progress=not quiet,
                        env_kwargs=env_kwargs)
    s = res["summary"]
    return {"placed_rate": s["placed_rate"], "success_rate": s["success_rate"], "env_steps": res["env_steps"],
            "placed": [int(e["placed"]) for e in res["episodes"]], "time_s": round(time.perf_counter() - t0, 1)}


def benchmark_rates(policy: Any, task: int, seed: int, quiet: bool, source: str) -> dict[str, Any]:
    """``policy``'s LIBERO success and placed on the benchmark states, as the table's cells evaluate them."""
    from libero_tgrpo.config import PipelineConfig
    from libero_tgrpo.stages import eval_config_kwargs, run_eval

    cfg = PipelineConfig(task=task, seed=seed).replace(progress=not quiet)
    t0 = time.perf_counter()
    res = run_eval(policy, task, **eval_config_kwargs(cfg))
    return {"success_rate": res["summary"]["success_rate"], "placed_rate": res["summary"]["placed_rate"],
            "source": source, "eval_s": round(time.perf_counter() - t0, 1)}


def run_unit(out_dir: Path, cell: dict[str, Any], sft_cell: dict[str, Any], roots: list[Path], placements: int,
             quiet: bool, max_steps: int | None = None) -> dict[str, Any]:
    """Score one RL cell's candidates, choose, and give the chosen policy's benchmark rates."""
    import torch

    from libero_tgrpo.policies import load_policy

    torch.set_num_threads(1)
    task, seed = int(cell["task"]), int(cell["seed"])
    run_dir, gap = find_run(cell, roots)
    iterations = int(json.loads((run_dir / "policy.json").read_text())["info"]["iterations"])
    scored: list[dict[str, Any]] = []
    for label, iteration, path in candidate_files(run_dir, iterations):
        policy = load_policy(path)[0]
        cache = out_dir / "starts" / (f"{weights_digest(policy)}_p{placements}_s{max_steps or 'default'}"
                                      f"_noise{HELDOUT_ROBOT_INIT_NOISE:g}.json")
        if label == "start" and cache.is_file():
            s = json.loads(cache.read_text())
        else:
            s = score(policy, task, seed, placements, quiet, max_steps)
            if label == "start":
                write_json(cache, s)
        scored.append({"label": label, "iteration": iteration, "file": str(path), **s})
    chosen = choose([Candidate(s["label"], s["iteration"], s["placed_rate"], s["success_rate"]) for s in scored])
    final = {"success_rate": cell["success_rate"], "placed_rate": cell["placed_rate"]}
    if chosen.label == "start":
        selected = {"success_rate": sft_cell["success_rate"], "placed_rate": sft_cell["placed_rate"],
                    "source": "the SFT cell"}
    elif chosen.label == "final":
        selected = {**final, "source": "the RL cell"}
    else:
        policy = load_policy(next(s["file"] for s in scored if s["label"] == chosen.label))[0]
        selected = benchmark_rates(policy, task, seed, quiet, f"benchmark evaluation of {chosen.label}")
    from libero_tgrpo.versions import machine, now, versions

    return {"key": Cell.of(cell).key, "task": task, "method": cell["method"], "seed": seed,
            "regime": cell.get("regime", "weak"), "run_dir": str(run_dir), "saved_to_cell_s": round(gap, 1),
            "placements": placements, "candidates": scored, "chosen": chosen.label, "final": final,
            "selected": selected, "versions": versions(), "machine": machine(), "date": now()}


def rerun_overrides(cell: dict[str, Any], placements: int, quiet: bool) -> dict[str, Any]:
    """The config changes of a cell's rerun: held-out selection, and for PPO what ``paper_table.ppo_overrides``
    gave the cell, as the cell recorded it (``paper_table.protocol``).

    Raises:
        ValueError: for a PPO cell whose protocol does not record them.
    """
    overrides: dict[str, Any] = {"progress": not quiet, "select": "heldout", "select_placements": placements,
                                 "select_points": POINTS}
    if cell["method"] == "ppo":
        proto = cell.get("protocol") or {}
        missing = [k for k in (*PPO_PROTOCOL, "iterations") if proto.get(k) is None]
        if missing:
            raise ValueError(f"{Cell.of(cell).label}: its protocol records no {', '.join(missing)}, so it cannot "
                             "be rerun at it")
        overrides.update({f"ppo.{k}": proto[k] for k in PPO_PROTOCOL}, **{"rl.iterations": proto["iterations"]})
    return overrides


def rerun_unit(out_dir: Path, cell: dict[str, Any], sft_cell: dict[str, Any], roots: list[Path],
               placements: int, quiet: bool) -> dict[str, Any]:
    """Train a cell again with ``select='heldout'`` (for the runs without snapshots: PPO's), from the cell's own
    SFT policy and at its recorded protocol (PPO: the env-step budget, value-head treatment and iteration cap it
    ran at); the run's final policy is compared with the cell's by their weights, and evaluated on the benchmark
    states only when they differ or the cell's run directory is gone (``final_reproduced`` is then None)."""
    import shutil

    from benchmarks.paper_table import run_cell
    from libero_tgrpo.policies import load_policy

    c = Cell.of(cell)
    try:
        original: Path | None = find_run(cell, roots)[0]
    except FileNotFoundError:
        original = None  # the cell's run directory is gone: its final policy is evaluated again below
    want = sft_cell["sft_policy"]["weights_sha256"]
    sft_files = [f for r in roots if (f := c.run_dir(r) / "sft" / "policy.pt").is_file()
                 and weights_digest(load_policy(f)[0]) == want]
    if not sft_files:
        raise FileNotFoundError(f"{c.label}: no sft/policy.pt with the cell's SFT digest under "
                                f"{', '.join(map(str, roots))}")
    sft_file = sft_files[0]
    rerun_root = out_dir / "rerun"
    (c.run_dir(rerun_root) / "sft").mkdir(parents=True, exist_ok=True)
    shutil.copy2(sft_file, c.run_dir(rerun_root) / "sft" / "policy.pt")
    payload = run_cell(rerun_root, c, rerun_overrides(cell, placements, quiet))
    run_dir = c.run_dir(rerun_root) / c.method
    record = json.loads((run_dir / "selection.json").read_text())
    # None: the cell's run directory is gone, so whether the rerun repeated it is not known from the weights
    same = None if original is None else weights_digest(load_policy(run_dir / "policy.pt")[0]) == weights_digest(
        load_policy(original / "policy.pt")[0])
    if same:
        final = {"success_rate": cell["success_rate"], "placed_rate": cell["placed_rate"], "source": "the RL cell"}
    else:
        final = benchmark_rates(load_policy(run_dir / "policy.pt")[0], c.task, c.seed, quiet,
                                "benchmark evaluation of the rerun's final policy")
    return {"key": c.key, "task": c.task, "method": c.method, "seed": c.seed, "regime": c.regime,
            "run_dir": str(run_dir), "rerun": True, "final_reproduced": same, "placements": placements,
            "candidates": record["candidates"], "chosen": record["chosen"]["label"], "final": final,
            "selected": {"success_rate": payload["success_rate"], "placed_rate": payload["placed_rate"],
                         "source": "the rerun's evaluation of its selected policy"},
            "timings_s": payload["timings_s"], "versions": payload["versions"], "machine": payload["machine"],
            "date": payload["date"]}


def _table_cells(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["cells"]


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    roots = [Path(r) for r in args.runs.split(",") if r.strip()]
    cells = _table_cells(Path(args.table))
    by_key = {Cell.of(c).key: c for c in cells}
    regimes = REGIMES if args.regime == "both" else (args.regime,)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHOD_ORDER[1:]]
    if bad or args.regime not in (*REGIMES, "both"):
        raise SystemExit(f"--methods {bad} / --regime {args.regime!r} not accepted: methods from "
                         f"{', '.join(METHOD_ORDER[1:])}, regime weak, paper or both")
    tasks = set(parse_ints(args.tasks)) if args.tasks else None
    todo = [c for c in cells if c["method"] in methods and c.get("regime", "weak") in regimes
            and (tasks is None or int(c["task"]) in tasks)
            and not (out_dir / "units" / f"{Cell.of(c).key}.json").is_file()]
    print(f"{len(todo)} cells to score", flush=True)

    def record(c: dict[str, Any], payload: dict[str, Any] | None, error: str | None) -> None:
        key = Cell.of(c).key
        if payload is not None:
            write_json(out_dir / "units" / f"{key}.json", payload)
        else:
            write_json(out_dir / "failed" / f"{key}.json", {"key": key, "error": error})

    unit = rerun_unit if args.rerun else run_unit
    run_in_order(todo, lambda c: unit(out_dir, c, by_key[Cell.of(c).sft.key], roots, args.placements, args.quiet),
                 record, label=lambda c: Cell.of(c).label, max_n=args.max_cells)
    return 0


def load_units(out_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out_dir / "units").glob("*.json"))}


def with_selection(cells: list[dict[str, Any]], units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's cells with each scored RL cell's rates replaced by its selected policy's."""
    out = []
    for c in cells:
        u = units.get(Cell.of(c).key)
        out.append(c if u is None else {**c, "success_rate": u["selected"]["success_rate"],
                                        "placed_rate": u["selected"]["placed_rate"]})
    return out


def _portable(unit: dict[str, Any]) -> dict[str, Any]:
    """A unit with its file paths from the table's ``runs/`` (or ``rerun/runs/``) on, not this machine's."""
    def rel(path: str) -> str:
        i = path.find("rerun/runs/")
        i = path.find("runs/") if i < 0 else i
        return path[i:] if i >= 0 else Path(path).name

    return {**unit, **({"run_dir": rel(unit["run_dir"])} if "run_dir" in unit else {}),
            "candidates": [{**c, **({"file": rel(c["file"])} if "file" in c else {})} for c in unit["candidates"]]}


def _mean(cells: list[dict[str, Any]], key: str) -> str:
    vals = [c[key] for c in cells if c.get(key) is not None]
    return f"{100 * sum(vals) / len(vals):.1f}" if vals else "-"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}"


def summarize(out_dir: Path, table: Path, results_dir: Path) -> dict[str, Any]:
    cells = _table_cells(table)
    units = load_units(out_dir)
    regimes = sorted({u["regime"] for u in units.values()})
    covered = {(u["regime"], int(u["task"])) for u in units.values()}
    scope = [c for c in cells if (c.get("regime", "weak"), int(c["task"])) in covered]  # the tasks scored only
    g_final, g_sel = goals(scope), goals(with_selection(scope, units))
    lines = ["# Held-out selection on the paper table's runs", "",
             f"Each RL run's start (its SFT policy), snapshots at {POINTS - 1} of the {POINTS} selection points and "
             f"final policy, scored greedily on {PLACEMENTS} held-out training placements; the best held-out placed "
             "rate is kept (ties: LIBERO success, then the earlier). Benchmark rates (50 states, %): LIBERO "
             "success / placed. The benchmark states never took part in the choice.", "",
             f"Regimes: {', '.join(regimes)}; tasks {', '.join(str(t) for t in sorted({t for _, t in covered}))} "
             f"(the goals are computed over these tasks only). Cells scored: {len(units)}, of them trained again with "
             f"`--select heldout` (`--rerun`, marked *rerun*): {sum(bool(u.get('rerun')) for u in units.values())}. "
             "The goals' *final* column is the published table; a rerun's *benchmark final* in the runs table is "
             "the rerun's own final policy (reruns do not repeat the cell's training bit for bit).",
             "", "## Goals (placed), final policy against selected policy", "",
             "| regime | goal | final | selected |", "|---|---|---|---|"]
    for a, b in zip(g_final, g_sel, strict=True):
        if a["regime"] not in regimes:
            continue
        fmt = lambda g: "-" if g["value"] is None else f"{g['value']:+.1f} ({g['verdict']})"  # noqa: E731
        lines.append(f"| {a['regime']} | {a['goal']} | {fmt(a)} | {fmt(b)} |")
    sel_cells = with_selection(scope, units)
    lines += ["", "## Means over the scored tasks and seeds (LIBERO success / placed, %)", "",
              "| method | final | selected |", "|---|---|---|"]
    for m in METHOD_ORDER:
        pair = [[c for c in cs if c["method"] == m] for cs in (scope, sel_cells)]
        if pair[0]:
            cols = [f"{_mean(cs, 'success_rate')} / {_mean(cs, 'placed_rate')}" for cs in pair]
            lines.append(f"| {m} | {cols[0]} | {cols[1]} |")
    lines += ["", "## Runs", "",
              "| run | held-out placed per candidate (start, ..., final) | chosen | benchmark final | "
              "benchmark selected |", "|---|---|---|---|---|"]
    for key, u in sorted(units.items(), key=lambda kv: (kv[1]["regime"], kv[1]["task"], kv[1]["method"],
                                                           kv[1]["seed"])):
        per = ", ".join(f"{_pct(s['placed_rate'])}" for s in u["candidates"])
        f, s = u["final"], u["selected"]
        key = f"{key} *rerun*" if u.get("rerun") else key
        lines.append(f"| {key} | {per} | {u['chosen']} | {_pct(f['success_rate'])} / {_pct(f['placed_rate'])} | "
                     f"{_pct(s['success_rate'])} / {_pct(s['placed_rate'])} |")
    unscored = [Cell.of(c).key for c in scope if c["method"] != "sft" and Cell.of(c).key not in units]
    if unscored:
        lines += ["", f"Not scored (final policy kept in both columns): {', '.join(sorted(unscored))}."]
    units = {k: _portable(u) for k, u in units.items()}
    payload = {"units": units, "goals_final": g_final, "goals_selected": g_sel, "unscored": unscored}
    results_dir.mkdir(parents=True, exist_ok=True)
    if units:
        _plot(units, cells, results_dir / "heldout_selection.png")
        lines += ["", "![final against selected](heldout_selection.png)"]
    write_json(results_dir / "heldout_selection.json", payload)
    write_text(results_dir / "heldout_selection.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return payload


def _plot(units: dict[str, dict[str, Any]], cells: list[dict[str, Any]], path: Path) -> None:
    """Bars per (task, method): placed on the benchmark states, mean over seeds, SFT / final / selected."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sft = {(c["task"], c["seed"], c.get("regime", "weak")): c["placed_rate"] for c in cells if c["method"] == "sft"}
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for u in units.values():
        groups.setdefault((u["task"], u["method"]), []).append(u)
    keys = sorted(groups, key=lambda k: (k[0], METHOD_ORDER.index(k[1])))
    x = np.arange(len(keys))
    series = [("SFT", lambda u: sft.get((u["task"], u["seed"], u["regime"]))),
              ("final policy", lambda u: u["final"]["placed_rate"]),
              ("selected on held-out placements", lambda u: u["selected"]["placed_rate"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(keys)), 3.8))
    for i, (name, get) in enumerate(series):
        vals = [100 * float(np.mean([get(u) for u in groups[k] if get(u) is not None] or [np.nan])) for k in keys]
        ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=name)
    ax.set_xticks(x, [f"T{t}\n{m}" for t, m in keys], fontsize=8)
    ax.set_ylabel("placed on the 50 benchmark states (%)\nmean over seeds")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.heldout_select", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="score the runs' candidates and choose (resumable)")
    r.add_argument("--runs", required=True, help="comma-separated output directories of paper_table runs")
    r.add_argument("--table", default=str(TABLE))
    r.add_argument("--out-dir", default=DEFAULT_OUT)
    r.add_argument("--regime", default="paper", help="weak, paper or both")
    r.add_argument("--methods", default="tgrpo,step_only,traj_only")
    r.add_argument("--tasks", default=None, help="e.g. 2,4,10 (default: every task of the regime)")
    r.add_argument("--placements", type=int, default=PLACEMENTS)
    r.add_argument("--rerun", action="store_true", help="train the cells again with select='heldout' (for cells "
                   "without snapshots, e.g. --methods ppo)")
    r.add_argument("--max-cells", type=int, default=None)
    r.add_argument("--quiet", action="store_true")
    s = sub.add_parser("summary", help="final against selected, with the goals")
    s.add_argument("--out-dir", default=DEFAULT_OUT)
    s.add_argument("--table", default=str(TABLE))
    s.add_argument("--results-dir", default=str(RESULTS))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    summarize(Path(args.out_dir), Path(args.table), Path(args.results_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
