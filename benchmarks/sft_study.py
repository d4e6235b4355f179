"""The SFT regime study: SFT settings scored on held-out training placements, and the choice of the paper-level
regime among them.

A setting (:class:`benchmarks._common.SFTSetting`) is how the SFT policy is made: the number of expert
demonstrations, where they end, the expert's action noise and when it lifts, the epochs and the hidden widths. Units are run by
``python -m benchmarks.tuning_sweep run --study sft`` (SFT only, greedy on the held-out placements); this module
builds the grid, aggregates the finished units and applies the choice rule (:func:`choose_sft_setting`).

Why the expert's noise is a dimension: a noise-free scripted expert repeats nearly the same path relative to the
object in every episode, so its demonstrations never show how to come back from a small miss, and the cloned
policy, once a few millimetres off that path, meets states that no demonstration visits. With
``demo_noise > 0`` the executed x, y actions wander and the expert's next actions correct them, so the set
shows corrections (noise injection in behaviour cloning, as in DART, Laskey et al. 2017); each recorded action
is the expert's own, noise-free answer to the state the noisy run reached.

Why when the expert lifts is a dimension (``expert_close_steps``): by default the expert holds the closed
gripper at least 6 steps and until the fingers stop. When they stop earlier, it waits at a still state and then
lifts from that same state: the state shows no count, so a policy without memory, cloned from those steps,
meets one state labelled both "hold" and "lift" and, holding, stays there. With ``close_steps=0`` it starts
lifting at the first closed step, and the fingers close during the slow lift (this loses Task2's flat box). The
lift rule (``expert_lift="still"``) lifts at the first step the fingers stop instead, which the state shows.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from typing import Any

import numpy as np

from benchmarks._common import SFTSetting
from libero_tgrpo.stage_configs import DEMO_UNTIL, EXPERT_CLOSE_STEPS, EXPERT_LIFT

__all__ = ["SFT_TARGET_SUCCESS", "add_sft_study_arguments", "sft_grid", "sft_study_rows", "sft_study_by_setting",
           "choose_sft_setting", "section_sft_study"]

SFT_TARGET_SUCCESS = 85.0
"""The SFT regime study's target: held-out LIBERO success (%) of a paper-level SFT policy (the paper's SFT
baselines average 86.4% on the benchmark states, SPEC §4). :func:`choose_sft_setting` picks the smallest setting
that reaches it; ``--sft-target`` changes it."""


def sft_grid(num_demos: list[int], epochs: list[int], hidden: list[tuple[int, ...]],
             until: tuple[str, ...] = (DEMO_UNTIL,), noise: tuple[float, ...] = (0.0,),
             close_steps: tuple[int, ...] = (EXPERT_CLOSE_STEPS,),
             lift: tuple[str, ...] = (EXPERT_LIFT,)) -> list[SFTSetting]:
    """Every combination of the SFT study's lists, in order."""
    return [SFTSetting(d, e, tuple(h), u, float(z), int(c), str(r))
            for d, e, h, u, z, c, r in itertools.product(num_demos, epochs, hidden, until, noise, close_steps, lift)]


def sft_study_rows(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, SFT study setting): held-out LIBERO success and placed (%), mean/std over seeds."""
    groups: dict[tuple[int, SFTSetting], list[dict[str, Any]]] = {}
    for u in units:
        if u.get("sft_setting"):
            groups.setdefault((int(u["task"]), SFTSetting.of(u["sft_setting"])), []).append(u)
    rows = []
    for (task, st), us in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1].size, kv[0][1].key)):
        succ = np.array([100 * u["success_rate"] for u in us])
        placed = np.array([100 * u["placed_rate"] for u in us])
        sft_s = [u["timings_s"]["sft"] for u in us if "sft" in (u.get("timings_s") or {})]
        rows.append({
            "task": task, "sft": st.key, "sft_setting": asdict(st), "seeds": sorted(u["seed"] for u in us),
            "n": len(us), "success_mean": float(succ.mean()),
            "success_std": float(succ.std(ddof=1)) if len(us) > 1 else 0.0, "placed_mean": float(placed.mean()),
            "placed_std": float(placed.std(ddof=1)) if len(us) > 1 else 0.0,
            "sft_seconds": float(np.mean(sft_s)) if sft_s else None,
        })
    return rows


def sft_study_by_setting(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per SFT study setting, smallest first: held-out LIBERO success and placed averaged over its tasks (each
    task the mean over its seeds), and the tasks it covers."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["sft"], []).append(r)
    out = [{"sft": k, "sft_setting": rs[0]["sft_setting"], "tasks": sorted(r["task"] for r in rs),
            "units": sum(r["n"] for r in rs), "success_mean": float(np.mean([r["success_mean"] for r in rs])),
            "placed_mean": float(np.mean([r["placed_mean"] for r in rs]))} for k, rs in by.items()]
    return sorted(out, key=lambda b: (SFTSetting.of(b["sft_setting"]).size, b["sft"]))


def choose_sft_setting(rows: list[dict[str, Any]], target: float = SFT_TARGET_SUCCESS) -> dict[str, Any] | None:
    """The paper-level SFT regime: the smallest setting (:attr:`SFTSetting.size`: fewest demonstrations, then
    epochs, then hidden units, then the lowest expert noise, then the default expert) whose held-out LIBERO success,
    averaged over the study's tasks, is >= ``target``
    (%), among the settings run on every task of the study.

    Returns:
        None without study units; else ``{"target", "reached", "setting", "sft_setting", "success_mean",
        "placed_mean", "tasks"}`` where ``setting`` is the chosen key, or None when no setting reaches the
        target (then ``best`` names the one with the highest success).
    """
    by = sft_study_by_setting(rows)
    if not by:
        return None
    tasks = sorted({r["task"] for r in rows})
    full = [b for b in by if b["tasks"] == tasks]
    reached = [b for b in full if b["success_mean"] >= target]
    out: dict[str, Any] = {"target": float(target), "tasks": tasks, "reached": bool(reached)}
    if reached:
        b = reached[0]  # by is sorted smallest first
        return {**out, "setting": b["sft"], "sft_setting": b["sft_setting"], "success_mean": b["success_mean"],
                "placed_mean": b["placed_mean"]}
    best = max(full, key=lambda b: (b["success_mean"], b["placed_mean"])) if full else None
    return {**out, "setting": None, "best": None if best is None else
            {"setting": best["sft"], "success_mean": best["success_mean"], "placed_mean": best["placed_mean"]}}


def section_sft_study(rows: list[dict[str, Any]], choice: dict[str, Any] | None, n_place: int) -> list[str]:
    if not rows:
        return []

    def pm(mean: float, std: float, n: int) -> str:
        return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.0f}"

    lines = ["", "## SFT regime study: SFT settings scored on training placements", "",
             f"SFT only (no RL), greedy on the same {n_place} held-out training placements, mean ± std over seeds. "
             "Setting `dD_eE_hH`: D demonstrations, E epochs, hidden widths H (`_u-success`: demonstrations that end at "
             "LIBERO's success, before the release; `_nzZ`: an expert with action noise Z; `_csC`: an expert that "
             "holds the gripper closed at least C steps before lifting, not 6).", "",
             "| task | setting | seeds | LIBERO success % | placed % | SFT time (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = "-" if r["sft_seconds"] is None else f"{r['sft_seconds']:.0f}"
        lines.append(f"| T{r['task']} | {r['sft']} | {r['n']} | {pm(r['success_mean'], r['success_std'], r['n'])} | "
                     f"{pm(r['placed_mean'], r['placed_std'], r['n'])} | {t} |")
    lines += ["", "Averaged over tasks (each task the mean over its seeds), smallest setting first:", "",
              "| setting | tasks | units | LIBERO success % | placed % |", "|---|---|---|---|---|"]
    for b in sft_study_by_setting(rows):
        lines.append(f"| {b['sft']} | {', '.join(f'T{t}' for t in b['tasks'])} | {b['units']} | "
                     f"{b['success_mean']:.1f} | {b['placed_mean']:.1f} |")
    if choice is None:
        return lines
    rule = (f"Rule: the smallest setting (fewest demonstrations, then fewest epochs, then fewest hidden units, then "
            f"the lowest expert noise, then the default expert) whose "
            f"held-out LIBERO success averaged over the study's tasks ({', '.join(f'T{t}' for t in choice['tasks'])})"
            f" reaches {choice['target']:g}%, among the settings run on all of them.")
    if choice["reached"]:
        st = SFTSetting.of(choice["sft_setting"])
        lines += ["", rule, f"Chosen: **{choice['setting']}** ({st.describe()}): LIBERO success "
                  f"{choice['success_mean']:.1f}%, placed {choice['placed_mean']:.1f}%. The paper table's paper-level "
                  f"regime takes it as `benchmarks.paper_table.PAPER_SFT = SFTSetting(num_demos={st.num_demos}, "
                  f"epochs={st.epochs}, hidden={st.hidden}"
                  + ("" if st.demo_until == DEMO_UNTIL else f", demo_until={st.demo_until!r}")
                  + (f", demo_noise={st.demo_noise:g}" if st.demo_noise else "")
                  + ("" if st.expert_close_steps == EXPERT_CLOSE_STEPS else
                     f", expert_close_steps={st.expert_close_steps}")
                  + ("" if st.expert_lift == EXPERT_LIFT else f", expert_lift={st.expert_lift!r}") + ")`."]
    else:
        best = choice.get("best")
        lines += ["", rule, "No setting reaches it" + ("" if best is None else
                  f"; the highest is {best['setting']} (LIBERO success {best['success_mean']:.1f}%, placed "
                  f"{best['placed_mean']:.1f}%)") + ": the paper-level regime is still to be chosen (more "
                  "demonstrations, epochs or wider layers)."]
    return lines


def add_sft_study_arguments(p: Any) -> None:
    """The SFT study's options of ``benchmarks.tuning_sweep`` (an ``argparse`` parser): comma-separated lists,
    whose combinations make the grid (:func:`sft_grid`)."""
    p.add_argument("--num-demos", default="20,50,100,200,400",
                   help="SFT study: demonstrations (default: %(default)s)")
    p.add_argument("--sft-epochs", default="100,300", help="SFT study: epochs (default: %(default)s)")
    p.add_argument("--hidden", default="128x128",
                   help="SFT study: hidden widths, settings by commas, widths by x (default: %(default)s)")
    p.add_argument("--demo-until", default=DEMO_UNTIL,
                   help="SFT study: where the demonstrations end, is_placed and/or is_success (default: %(default)s)")
    p.add_argument("--demo-noise", default="0",
                   help="SFT study: the expert's action noise (standard deviations) (default: %(default)s)")
    p.add_argument("--expert-close-steps", default=str(EXPERT_CLOSE_STEPS),
                   help="SFT study: the expert's close_steps, least steps closed before lifting (default: %(default)s)")
    p.add_argument("--expert-lift", default=EXPERT_LIFT,
                   help="SFT study: the expert's lift rules, timer and/or still (default: %(default)s)")
