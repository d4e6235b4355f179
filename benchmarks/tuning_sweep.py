"""Held-out tuning of the RL settings: chosen on seeded training placements, never on the benchmark states.

The 50 benchmark states of a task are the evaluation set of the paper table; settings picked by looking at
them overfit them. This sweep scores each setting on *held-out training placements* instead: scenes drawn
by the env's own placement sampler from fixed placement seeds (``HELDOUT_PLACEMENT_OFFSET + j``, j = 0 .. N-1),
the same N scenes for every setting and seed, disjoint from the placements RL trains on
(``libero_tgrpo.envs.TRAIN_PLACEMENT_OFFSET + seed + k * M``) and from the demonstrations' (drawn from their
reset seeds).

One *unit* is one (task, setting, seed): SFT from the cached demonstrations (trained once per task and seed
and shared by every setting), RL with the setting (the main job's config, ``libero_tgrpo.PipelineConfig``
defaults, with the setting's changes), then a greedy evaluation on the N held-out placements reporting LIBERO's
success (``is_success``) and *placed* (object released in an undisturbed basket). The SFT policy of each
(task, seed) is scored on the same placements (unit ``sft``), so every RL unit has its own baseline. Each unit
is one JSON file under ``--out-dir``, written atomically when it finishes; ``run`` skips the units that exist,
so the sweep can be stopped and restarted at any point. ``summary`` writes
``benchmarks/results/tuning_sweep.{md,json,png}``.

A *setting* is (learning rate, KL beta, temperature, update schedule, target KL, TGRPO's alphas); ``run`` sweeps
the product of the lists it is given. Everything else is the main job's, except what the unit-size flags change (iterations,
group size, number of held-out placements, evaluation envs).

Usage:
    python -m benchmarks.tuning_sweep run                  # the default plan (~80 min on 2 cores), resumable
    python -m benchmarks.tuning_sweep run --lrs 1e-4,3e-5,1e-5 --kl-betas 0.04 --seeds 0-4
    python -m benchmarks.tuning_sweep run --tasks 2 --lrs 3e-5 --alphas paper,0.5:0.5,0:1   # TGRPO's alphas
    python -m benchmarks.tuning_sweep run --iterations 2 --num-envs 2 --eval-placements 2 --seeds 0 \\
        --lrs 1e-4 --kl-betas 0.04 --out-dir outputs/tuning_tiny --results-dir outputs/tuning_tiny
    python -m benchmarks.tuning_sweep list                 # the plan and what is done
    python -m benchmarks.tuning_sweep summary              # tables and chart from the finished units

Default plan: Tasks 2, 4 and 10 (the paper-level regime's tasks), seeds 0-2, lr in {1e-4, 3e-5 (the main
job's)}, KL beta 0.04, temperature 1.0, per-step schedule, 30 iterations of M = 8, 30 held-out placements:
18 RL units + 9 SFT units, about 3-5 minutes per RL unit on an idle 2-core machine.

**SFT regime study** (``--study sft``): SFT-only units over the product of ``--num-demos`` x ``--sft-epochs`` x
``--hidden`` (an :class:`SFTSetting` each), scored on the same held-out placements with LIBERO's success and
placed. The summary's "SFT regime study" section applies :func:`choose_sft_setting`: the smallest setting
(fewest demonstrations, then fewest epochs, then fewest hidden units) whose held-out LIBERO success, averaged
over the study's tasks (each task the mean over seeds), reaches ``--sft-target`` (default
:data:`SFT_TARGET_SUCCESS`, the paper's SFT level). That choice is the paper table's paper-level regime
(``benchmarks.paper_table.PAPER_SFT``)::

    python -m benchmarks.tuning_sweep run --study sft --tasks 2,4,10 --seeds 0-2 \\
        --num-demos 20,50,100,200,400 --sft-epochs 100,300 --hidden 128x128,256x256
    python -m benchmarks.tuning_sweep summary --sft-target 85

``--demo-noise 0,0.2`` and ``--expert-close-steps 6,0`` add the expert's noise and lift rule (see sft_study).
The grid, the aggregation and the choice rule are in :mod:`benchmarks.sft_study`.

Default study plan: Tasks 2, 4 and 10 (the paper-level regime's tasks), seeds 0-2, demonstrations {20, 50,
100, 200, 400} x epochs {100, 300} x hidden {128x128}: 30 units per seed. The demonstrations of a (task,
number, seed) are cached and shared by every epochs/hidden setting, the largest set first (the smaller are cut
from it); the main job's own setting reuses the SFT policy of the RL units.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import SFTSetting, parse_ints, run_in_order
from benchmarks.sft_study import (
    SFT_TARGET_SUCCESS,
    add_sft_study_arguments,
    choose_sft_setting,
    section_sft_study,
    sft_grid,
    sft_study_by_setting,
    sft_study_rows,
)
from benchmarks.sweep_values import alpha_pairs, choices, floats, hidden_list, int_list, target_kls
from libero_gym import TERMINATION_KEYS
from libero_gym.experts import LIFT_RULES
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.paper import paper_alphas
from libero_tgrpo.selection import HELDOUT_PLACEMENT_OFFSET, HELDOUT_ROBOT_INIT_NOISE, score_heldout

DEFAULT_OUT = "outputs/tuning_sweep"
RESULTS = Path(__file__).resolve().parent / "results"
SELECTION_METRIC = "placed_rate"
"""The held-out metric that ranks settings (the strict one, which training optimises); LIBERO's success is
reported beside it."""
STUDIES = ("rl", "sft")
"""What ``run`` plans: RL settings from the main job's SFT policy (``rl``), or the SFT regime study (``sft``)."""
DEFAULT_TASKS = {"rl": "2,4,10", "sft": "2,4,10"}
"""``--tasks`` of each study when not given: the paper-level regime's tasks."""


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: the RL options it changes from the main job's."""

    lr: float
    kl_beta: float
    temperature: float
    update_schedule: str = "per_step"
    target_kl: float | None = None
    alphas: tuple[float, float] | None = None
    """TGRPO's ``(alpha1, alpha2)`` (normalised to their ratio like every run's); None: the paper's for the task,
    also on a task whose run default was chosen otherwise (``libero_tgrpo.config.HELDOUT_ALPHAS``)."""

    @property
    def key(self) -> str:
        """``lr0.0001_beta0.04_temp1_per_step`` (plus ``_tkl<value>`` with a target KL, ``_a<alpha1>-<alpha2>``
        with alphas other than the paper's)."""
        key = f"lr{self.lr:g}_beta{self.kl_beta:g}_temp{self.temperature:g}_{self.update_schedule}"
        key = key if self.target_kl is None else f"{key}_tkl{self.target_kl:g}"
        return key if self.alphas is None else f"{key}_a{self.alphas[0]:g}-{self.alphas[1]:g}"

    def overrides(self, task: int) -> dict[str, Any]:
        """``PipelineConfig.replace`` changes of the setting on ``task`` (the alphas always given: the paper's
        differ from the run's default where that was chosen otherwise)."""
        out: dict[str, Any] = {"rl.lr": self.lr, "rl.kl_beta": self.kl_beta, "rl.temperature": self.temperature,
                               "rl.update_schedule": self.update_schedule}
        if self.target_kl is not None:
            out["rl.target_kl"] = self.target_kl
        out["alpha1"], out["alpha2"] = paper_alphas(task) if self.alphas is None else self.alphas
        return out


@dataclass(frozen=True)
class Unit:
    """One (task, setting, seed); ``setting`` None is the SFT policy of the (task, seed): the main job's SFT, or
    with ``sft`` a point of the SFT regime study (``sft`` is only for SFT units: RL starts from the main job's)."""

    task: int
    seed: int
    setting: Setting | None = None
    sft: SFTSetting | None = None

    def __post_init__(self) -> None:
        if self.setting is not None and self.sft is not None:
            raise ValueError(f"a unit is an RL setting ({self.setting.key}) or an SFT study setting "
                             f"({self.sft.key}), not both")

    @property
    def setting_key(self) -> str:
        """``lr0.0001_beta0.04_temp1_per_step``, ``sft`` (the main job's SFT) or ``sft_d100_e300_h128x128``."""
        if self.setting is not None:
            return self.setting.key
        return "sft" if self.sft is None else f"sft_{self.sft.key}"

    @property
    def key(self) -> str:
        """``task4_lr0.0001_beta0.04_temp1_per_step_seed0``, ``task4_sft_seed0`` or
        ``task4_sft_d100_e300_h128x128_seed0``."""
        return f"task{self.task}_{self.setting_key}_seed{self.seed}"

    def path(self, out_dir: Path) -> Path:
        """The unit's JSON file."""
        return out_dir / "units" / f"{self.key}.json"

    def failed_path(self, out_dir: Path) -> Path:
        """Where a failed attempt at the unit is recorded."""
        return out_dir / "failed" / f"{self.key}.json"

    def sft_dir(self, out_dir: Path) -> Path:
        """The SFT policy shared by every RL setting of the (task, seed); a study setting's own (the main job's
        setting shares the RL units' policy)."""
        base = out_dir / "sft" / f"task{self.task}_seed{self.seed}"
        if self.sft is None or self.sft == SFTSetting.main_job():
            return base
        return base.with_name(f"{base.name}_{self.sft.key}")

    def run_dir(self, out_dir: Path) -> Path:
        """The RL run of the unit."""
        return out_dir / "runs" / self.key


def settings_grid(lrs: list[float], kl_betas: list[float], temperatures: list[float], schedules: list[str],
                  target_kls: list[float | None],
                  alphas: list[tuple[float, float] | None] | None = None) -> list[Setting]:
    """Every combination of the lists, in order (``alphas`` None: the paper's only)."""
    return [Setting(lr, b, t, s, k, a) for lr, b, t, s, k, a in itertools.product(
        lrs, kl_betas, temperatures, schedules, target_kls, alphas or [None])]


def plan(tasks: list[int], seeds: list[int], settings: list[Setting]) -> list[Unit]:
    """Per seed and task: the SFT unit, then one unit per setting."""
    return [Unit(task, seed, s) for seed in seeds for task in tasks for s in [None, *settings]]


def sft_plan(tasks: list[int], seeds: list[int], settings: list[SFTSetting]) -> list[Unit]:
    """The SFT regime study: per seed and task, one SFT-only unit per setting, the most demonstrations first
    (the smaller sets are cut from its cache by :func:`libero_tgrpo.demos.get_demos`: one expert run each)."""
    ordered = sorted(settings, key=lambda s: -s.num_demos)  # stable: epochs and widths keep their order
    return [Unit(task, seed, sft=s) for seed in seeds for task in tasks for s in ordered]


@dataclass(frozen=True)
class UnitSize:
    """What one unit costs: RL iterations, group size, held-out placements, evaluation envs."""

    iterations: int | None = None
    num_envs: int | None = None
    eval_placements: int = 30
    eval_envs: int = 2
    quiet: bool = False

    def overrides(self) -> dict[str, Any]:
        out: dict[str, Any] = {"progress": not self.quiet, "eval.envs": self.eval_envs}
        if self.iterations is not None:
            out["rl.iterations"] = self.iterations
        if self.num_envs is not None:
            out["num_envs"] = self.num_envs
        return out


def _config(unit: Unit, size: UnitSize, out_dir: Path) -> Any:
    from libero_tgrpo.config import PipelineConfig

    changes = {**size.overrides(), **({} if unit.setting is None else unit.setting.overrides(unit.task)),
               **({} if unit.sft is None else unit.sft.overrides())}
    cfg = PipelineConfig(task=unit.task, seed=unit.seed, output_dir=str(unit.sft_dir(out_dir)), video=False)
    return cfg.replace(**changes)


def _check_disjoint(cfg: Any) -> None:
    from libero_tgrpo.envs import TRAIN_PLACEMENT_OFFSET

    last = TRAIN_PLACEMENT_OFFSET + cfg.seed + cfg.rl.iterations * cfg.num_envs
    if last >= HELDOUT_PLACEMENT_OFFSET:
        raise SystemExit(f"training placement seeds reach {last}, into the held-out ones from "
                         f"{HELDOUT_PLACEMENT_OFFSET}: use a smaller seed, fewer iterations or a smaller group")


def sft_policy(unit: Unit, cfg: Any, out_dir: Path) -> tuple[Any, dict[str, Any], dict[str, float]]:
    """The SFT policy of the unit's (task, seed): loaded when on disk, else trained from the cached demos."""
    from libero_tgrpo.policies import load_policy
    from libero_tgrpo.stages import run_demos, run_sft

    path = unit.sft_dir(out_dir) / "policy.pt"
    if path.is_file():
        policy, spec, _ = load_policy(path)
        return policy, spec, {}
    t0 = time.perf_counter()
    demos, _ = run_demos(cfg)
    t1 = time.perf_counter()
    policy, spec, _ = run_sft(cfg, demos, unit.sft_dir(out_dir))
    return policy, spec, {"demos": t1 - t0, "sft": time.perf_counter() - t1}


def evaluate_heldout(policy: Any, cfg: Any, n: int) -> dict[str, Any]:
    """Greedy evaluation of ``policy`` on the ``n`` held-out training placements of ``cfg.task``."""
    e = cfg.eval
    return score_heldout(policy, cfg.task, n, obs_mode=cfg.obs_mode, max_steps=e.max_steps, num_envs=e.envs,
                         seed=cfg.seed, temperature=e.temperature, progress=cfg.progress)


def run_unit(out_dir: Path, unit: Unit, size: UnitSize) -> dict[str, Any]:
    """Run one unit (SFT policy, RL with the setting unless it is the SFT unit, held-out evaluation)."""
    import torch

    from benchmarks.paper_table import train_diagnostics, weights_digest
    from libero_tgrpo.stages import run_train
    from libero_tgrpo.versions import machine, now, versions

    torch.set_num_threads(1)
    cfg = _config(unit, size, out_dir)
    _check_disjoint(cfg)
    t0 = time.perf_counter()
    policy, spec, timings = sft_policy(unit, cfg, out_dir)
    record: dict[str, Any] = {"sft_policy": {"weights_sha256": weights_digest(policy)}}
    if unit.setting is not None:
        t1 = time.perf_counter()
        result = run_train(cfg, policy, spec, unit.run_dir(out_dir))
        timings["train"] = time.perf_counter() - t1
        policy, hist = result.policy, result.history
        record["train"] = {
            "iterations": len(hist),
            "env_steps": hist[-1].get("charts/env_steps") if hist else None,
            "optimizer_steps": float(sum(h.get("losses/optimizer_steps", 0.0) for h in hist)),
            "final_group_success": hist[-1].get("charts/success_rate") if hist else None,
            **train_diagnostics(hist),
        }
    t1 = time.perf_counter()
    res = evaluate_heldout(policy, cfg, size.eval_placements)
    timings["eval"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    s = res["summary"]
    return {
        "task": unit.task,
        "seed": unit.seed,
        "setting": None if unit.setting is None else asdict(unit.setting),
        "setting_key": unit.setting_key,
        "sft_setting": None if unit.sft is None else asdict(unit.sft),
        "success_rate": s["success_rate"],
        "placed_rate": s["placed_rate"],
        "summary": s,
        "placement_seeds": [e["placement_seed"] for e in res["episodes"]],
        "successes": [int(e["success"]) for e in res["episodes"]],
        "placed": [int(e["placed"]) for e in res["episodes"]],
        "lengths": [int(e["length"]) for e in res["episodes"]],
        "unit_size": asdict(size),
        "config": cfg.to_dict(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "versions": versions(),
        "machine": machine(),
        "date": now(),
        **record,
    }


# ---------------------------------------------------------------------------------------------- commands
def _plan_from(args: argparse.Namespace) -> tuple[list[Unit], UnitSize]:
    from tgrpo.config import UPDATE_SCHEDULES

    if args.study not in STUDIES:
        raise SystemExit(f"--study {args.study!r} is not accepted: choose from {', '.join(STUDIES)}")
    tasks = parse_ints(args.tasks if args.tasks is not None else DEFAULT_TASKS[args.study])
    size = UnitSize(iterations=args.iterations, num_envs=args.num_envs, eval_placements=args.eval_placements,
                    eval_envs=args.eval_envs, quiet=getattr(args, "quiet", False))
    if size.eval_placements < 1 or size.eval_envs < 1:
        raise SystemExit(f"--eval-placements {size.eval_placements} and --eval-envs {size.eval_envs} must be >= 1")
    if args.study == "sft":
        grid = sft_grid(int_list(args.num_demos, "--num-demos"), int_list(args.sft_epochs, "--sft-epochs"),
                        hidden_list(args.hidden), tuple(choices(args.demo_until, "--demo-until", TERMINATION_KEYS)),
                        tuple(floats(args.demo_noise, "--demo-noise", low=0.0)),
                        tuple(int_list(args.expert_close_steps, "--expert-close-steps", low=0)),
                        tuple(choices(args.expert_lift, "--expert-lift", LIFT_RULES)))
        units = sft_plan(tasks, parse_ints(args.seeds), grid)
        for u in units:  # every config of the plan is built (and so checked) before any work starts
            _config(u, size, Path(args.out_dir))
        return units, size
    settings = settings_grid(floats(args.lrs), floats(args.kl_betas), floats(args.temperatures),
                             choices(args.schedules, "--schedules", UPDATE_SCHEDULES), target_kls(args.target_kls),
                             alpha_pairs(args.alphas))
    units = plan(tasks, parse_ints(args.seeds), settings)
    # every config of the plan is built (and so checked) before any work starts
    for u in units:
        _check_disjoint(_config(u, size, Path(args.out_dir)))
    return units, size


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    units, size = _plan_from(args)
    todo = [u for u in units if not u.path(out_dir).is_file()]
    print(f"{len(units)} units planned, {len(units) - len(todo)} done, {len(todo)} to run", flush=True)

    def record(unit: Any, payload: dict[str, Any] | None, error: str | None) -> None:
        if payload is None:
            write_json(unit.failed_path(out_dir), {"unit": unit.key, "error": error})
            return
        write_json(unit.path(out_dir), payload)
        print(f"unit {unit.key}: held-out LIBERO success {100 * payload['success_rate']:.0f}%, placed "
              f"{100 * payload['placed_rate']:.0f}% ({payload['timings_s']['total']:.0f}s)", flush=True)

    run_in_order(todo, lambda u: run_unit(out_dir, u, size), record, label=lambda u: f"unit {u.key}",
                 max_n=args.max_units, time_budget_min=args.time_budget_min)
    if not args.no_summary:
        summarize(out_dir, Path(args.results_dir), sft_target=args.sft_target)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    units, _ = _plan_from(args)
    for u in units:
        path = u.path(out_dir)
        if path.is_file():
            d = json.loads(path.read_text())
            print(f"{u.key}: done, LIBERO success {100 * d['success_rate']:.0f}%, placed {100 * d['placed_rate']:.0f}%")
        else:
            print(f"{u.key}: todo")
    return 0


# ---------------------------------------------------------------------------------------------- summary
def load_units(out_dir: Path) -> list[dict[str, Any]]:
    """Every finished unit under ``out_dir``."""
    return [json.loads(p.read_text()) for p in sorted((out_dir / "units").glob("*.json"))]


def aggregate(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, setting): held-out rates (%) mean/std over seeds, the paired change from the SFT
    policy of the same seed, how many seeds ended below their SFT, and the training diagnostics."""
    sft = {(u["task"], u["seed"]): u for u in units if u["setting_key"] == "sft"}
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for u in units:
        groups.setdefault((u["task"], u["setting_key"]), []).append(u)
    rows = []
    for (task, key), us in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "sft", kv[0][1])):
        succ = np.array([100 * u["success_rate"] for u in us])
        placed = np.array([100 * u["placed_rate"] for u in us])
        base = [sft.get((task, u["seed"])) for u in us]
        d_placed = [100 * (u["placed_rate"] - b["placed_rate"]) for u, b in zip(us, base) if b is not None]
        d_succ = [100 * (u["success_rate"] - b["success_rate"]) for u, b in zip(us, base) if b is not None]
        train = [u.get("train") or {} for u in us]
        kl = [t["ref_kl_max"] for t in train if "ref_kl_max" in t]
        rows.append({
            "task": task, "setting": key, "seeds": [u["seed"] for u in us], "n": len(us),
            "success_mean": float(succ.mean()), "success_std": float(succ.std(ddof=1)) if len(us) > 1 else 0.0,
            "placed_mean": float(placed.mean()), "placed_std": float(placed.std(ddof=1)) if len(us) > 1 else 0.0,
            "placed_minus_sft": float(np.mean(d_placed)) if d_placed and key != "sft" else None,
            "success_minus_sft": float(np.mean(d_succ)) if d_succ and key != "sft" else None,
            "below_sft": int(sum(d < 0 for d in d_placed)) if key != "sft" else None,
            "ref_kl_max": float(max(kl)) if kl else None,
            "env_steps": float(np.mean([t["env_steps"] for t in train if t.get("env_steps") is not None]))
            if any(t.get("env_steps") is not None for t in train) else None,
            "optimizer_steps": float(np.mean([t["optimizer_steps"] for t in train if "optimizer_steps" in t]))
            if any("optimizer_steps" in t for t in train) else None,
        })
    return rows


def best_setting(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting with the highest held-out placed rate averaged over tasks (ties: LIBERO success), among
    the settings run on every task that has any RL unit."""
    rl = [r for r in rows if r["setting"] != "sft"]
    tasks = {r["task"] for r in rl}
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rl:
        by.setdefault(r["setting"], []).append(r)
    full = {k: v for k, v in by.items() if {r["task"] for r in v} == tasks}
    if not full:
        return None
    key = max(full, key=lambda k: (np.mean([r["placed_mean"] for r in full[k]]),
                                   np.mean([r["success_mean"] for r in full[k]])))
    return {"setting": key, "placed_mean": float(np.mean([r["placed_mean"] for r in full[key]])),
            "success_mean": float(np.mean([r["success_mean"] for r in full[key]])), "tasks": sorted(tasks)}


def summarize(out_dir: Path, results_dir: Path = RESULTS, sft_target: float = SFT_TARGET_SUCCESS) -> dict[str, Any] | None:
    """Write ``tuning_sweep.{md,json,png}`` to ``results_dir`` from the units under ``out_dir`` (the RL settings'
    table and the SFT regime study's section, each when it has units)."""
    if not 0 < sft_target <= 100:
        raise SystemExit(f"--sft-target {sft_target!r} is not accepted: give a success rate in (0, 100] (%)")
    units = load_units(out_dir)
    if not units:
        print(f"no finished units under {out_dir}; nothing to summarise", flush=True)
        return None
    rl_units = [u for u in units if not u.get("sft_setting")]
    rows = aggregate(rl_units)
    best = best_setting(rows)
    study = sft_study_rows(units)
    choice = choose_sft_setting(study, sft_target)
    size = units[0].get("unit_size", {})
    n_place = len(units[0].get("placement_seeds", []))

    def pm(mean: float, std: float, n: int) -> str:
        return f"{mean:.1f} ± {std:.1f}" if n > 1 else f"{mean:.0f}"

    def opt(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "# Held-out tuning sweep: settings scored on training placements",
        "",
        f"Greedy success on {n_place} held-out training placements (placement seeds {HELDOUT_PLACEMENT_OFFSET} + j, the "
        f"arm's start noise {HELDOUT_ROBOT_INIT_NOISE:g} rad; never the 50 benchmark states), mean ± std over seeds.",
    ]
    if rows:
        lines += [
            "", "## RL settings", "",
            "Each row: one setting on one task. *Placed* (released in an undisturbed basket) ranks the settings; "
            "LIBERO's success is beside it. Δ SFT is paired by seed with the SFT policy of the same seed on the same "
            "placements; *below SFT* counts seeds whose placed rate fell under their SFT's.",
            "",
            "| task | setting | seeds | placed % | LIBERO success % | Δ SFT placed | Δ SFT success | below SFT | "
            "KL to SFT max | env steps | optimizer steps |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    for r in rows:
        lines.append(
            f"| T{r['task']} | {r['setting']} | {r['n']} | {pm(r['placed_mean'], r['placed_std'], r['n'])} | "
            f"{pm(r['success_mean'], r['success_std'], r['n'])} | {opt(r['placed_minus_sft'], '+.1f')} | "
            f"{opt(r['success_minus_sft'], '+.1f')} | {opt(r['below_sft'], 'd')} | {opt(r['ref_kl_max'], '.2f')} | "
            f"{opt(r['env_steps'], '.0f')} | {opt(r['optimizer_steps'], '.0f')} |")
    if best is not None:
        lines += ["", f"Best setting by held-out placed rate: **{best['setting']}** (placed {best['placed_mean']:.1f}%, "
                  f"LIBERO success {best['success_mean']:.1f}%, tasks {best['tasks']})."]
    lines += section_sft_study(study, choice, n_place)
    failed = [json.loads(p.read_text()) for p in sorted((out_dir / "failed").glob("*.json"))]
    failed = [f for f in failed if not (out_dir / "units" / f"{f['unit']}.json").is_file()]
    if failed:
        lines += ["", "Failed units (rerun `run` to retry): " + "; ".join(f"{f['unit']} ({f['error']})" for f in failed)]
    vers = units[0].get("versions", {})
    mach = units[0].get("machine", {})
    lines += ["", f"Units finished: {len(units)}. Unit size: {size}.",
              "Command: `python -m benchmarks.tuning_sweep run` (resumable; `--study sft` for the SFT regime study; "
              "see the module docstring for the flags), then `python -m benchmarks.tuning_sweep summary`.",
              "", "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
              f"Machine: {mach.get('cpu_model', '?')} ({mach.get('cpu_count', '?')} cores).", "",
              "![held-out success per setting](tuning_sweep.png)", ""]
    write_text(results_dir / "tuning_sweep.md", "\n".join(lines))
    payload = {"rows": rows, "best": best, "heldout_placement_offset": HELDOUT_PLACEMENT_OFFSET,
               "sft_study": {"rows": study, "by_setting": sft_study_by_setting(study), "choice": choice},
               "units": [{k: u[k] for k in ("task", "seed", "setting", "setting_key", "sft_setting", "success_rate",
                                            "placed_rate", "placement_seeds", "unit_size", "timings_s", "versions",
                                            "machine", "date") if k in u} | {"train": u.get("train")} for u in units]}
    write_json(results_dir / "tuning_sweep.json", payload)
    _plot(rows, study, results_dir / "tuning_sweep.png")
    print(f"wrote {results_dir / 'tuning_sweep.md'} ({len(units)} units)", flush=True)
    return payload


def _plot(rows: list[dict[str, Any]], study: list[dict[str, Any]], path: Path) -> None:
    """Bars of held-out placed and LIBERO success: one panel for the RL settings, one for the SFT study."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib not installed: chart skipped", file=sys.stderr)
        return
    panels = [(title, rs, label) for title, rs, label in (
        ("RL settings", rows, lambda r: f"T{r['task']} {r['setting']}"),
        ("SFT regime study (SFT only)", study, lambda r: f"T{r['task']} {r['sft']}")) if rs]
    if not panels:
        return
    width = max(6, 0.9 * max(len(rs) for _, rs, _ in panels) + 2)
    fig = Figure(figsize=(width, 4.5 * len(panels)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    for ax, (title, rs, label) in zip(axes, panels):
        x = np.arange(len(rs))
        ax.bar(x - 0.2, [r["placed_mean"] for r in rs], 0.4, yerr=[r["placed_std"] for r in rs], capsize=3,
               label="placed")
        ax.bar(x + 0.2, [r["success_mean"] for r in rs], 0.4, yerr=[r["success_std"] for r in rs], capsize=3,
               label="LIBERO success")
        ax.set_xticks(x)
        ax.set_xticklabels([label(r) for r in rs], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("held-out success (%)")
        ax.set_ylim(0, 105)
        ax.set_title(f"{title}: held-out training placements (mean ± std over seeds)", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tuning_sweep", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("run", "list"):
        p = sub.add_parser(name, help="run the missing units" if name == "run" else "show the plan and what is done")
        p.add_argument("--study", default="rl", choices=STUDIES,
                       help="rl: RL settings from the main job's SFT; sft: the SFT regime study (default: %(default)s)")
        p.add_argument("--tasks", default=None,
                       help=f"tasks (default: {DEFAULT_TASKS['rl']} for rl, {DEFAULT_TASKS['sft']} for sft)")
        p.add_argument("--seeds", default="0-2", help="seeds (default: %(default)s)")
        p.add_argument("--lrs", default="1e-4,3e-5", help="RL learning rates (default: %(default)s)")
        p.add_argument("--kl-betas", default="0.04", help="KL weights (default: %(default)s)")
        p.add_argument("--temperatures", default="1.0", help="rollout temperatures (default: %(default)s)")
        p.add_argument("--schedules", default="per_step", help="update schedules (default: %(default)s)")
        p.add_argument("--target-kls", default="none",
                       help="target KL of the early stop ('none': off) (default: %(default)s)")
        p.add_argument("--alphas", default="paper",
                       help="TGRPO's alpha1:alpha2 pairs, or 'paper' for the task's paper values (also where "
                            "the run's default differs), by commas "
                            "(default: %(default)s)")
        add_sft_study_arguments(p)
        p.add_argument("--iterations", type=int, default=None, help="RL iterations (default: the main job's)")
        p.add_argument("--num-envs", type=int, default=None, help="group size M (default: the main job's)")
        p.add_argument("--eval-placements", type=int, default=30,
                       help="held-out placements per evaluation (default: %(default)s)")
        p.add_argument("--eval-envs", type=int, default=2, help="envs of each evaluation (default: %(default)s)")
        p.add_argument("--out-dir", default=DEFAULT_OUT, help="units, SFT policies and runs (default: %(default)s)")
        if name == "run":
            p.add_argument("--max-units", type=int, default=None, help="stop after this many new units")
            p.add_argument("--time-budget-min", type=float, default=None,
                           help="start no new unit after this many minutes")
            p.add_argument("--results-dir", default=str(RESULTS), help="where the summary goes (default: %(default)s)")
            p.add_argument("--no-summary", action="store_true", help="do not rebuild the summary at the end")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
            _target_flag(p)
    p = sub.add_parser("summary", help="build the tables and the chart from the finished units")
    p.add_argument("--out-dir", default=DEFAULT_OUT, help="units (default: %(default)s)")
    p.add_argument("--results-dir", default=str(RESULTS), help="where to write (default: %(default)s)")
    _target_flag(p)
    return ap


def _target_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sft-target", type=float, default=SFT_TARGET_SUCCESS,
                   help="SFT study: held-out LIBERO success (%%) the chosen setting must reach (default: %(default)s)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "list":
        return cmd_list(args)
    summarize(Path(args.out_dir), Path(args.results_dir), sft_target=args.sft_target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
