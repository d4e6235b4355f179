"""The paper's Table 1 on our own runs: SFT vs TGRPO vs step-only vs trajectory-only vs PPO on LIBERO-Object.

Built-in state policy (``tgrpo.MLPTokenPolicy``), the main job's settings (``libero_tgrpo.PipelineConfig``
defaults) for every task, the paper's alpha per task, 50-episode evaluation on the benchmark states
(greedy, 280 steps). One *cell* is one (task, method, seed); each is written as one JSON file under
``--out-dir`` as soon as it finishes, so the work can be done in chunks and resumed: ``run`` skips the cells
that exist. ``summary`` builds ``benchmarks/results/paper_table.{md,csv,json,png}`` from whatever cells exist,
side by side with the paper's Table 1.

Usage:
    python -m benchmarks.paper_table run                       # the full plan, resumable
    python -m benchmarks.paper_table run --tasks 4 --seeds 0-2  # one chunk
    python -m benchmarks.paper_table run --max-cells 3          # at most 3 new cells, then stop
    python -m benchmarks.paper_table run --regime weak          # only the weak regime's cells
    python -m benchmarks.paper_table list                       # the plan and what is done
    python -m benchmarks.paper_table summary                    # tables and chart from the finished cells
    python -m benchmarks.paper_table restore                    # cells of the committed summary, to add to

``restore`` writes the cells held in ``benchmarks/results/paper_table.json`` back under ``--out-dir`` (never
over a cell that is there), so a fresh checkout can add cells to the published table and rebuild it. A
restored cell has the published fields only (no per-state results, no policies); RL cells of a (task, seed)
whose SFT policy is not on disk retrain it from the same seed.

Two starting regimes (``--regime``): *weak*, the main job's SFT (20 demonstrations), and *paper*, a paper-level
SFT (~85% LIBERO success, like the paper's 86.4%) of settings :data:`PAPER_SFT`, chosen on training placements.
Weak cells keep their keys and files (``task4_tgrpo_seed0``, ``runs/task4_seed0``); paper-level cells carry the
suffix ``_paper`` (``task4_tgrpo_seed0_paper``, ``runs/task4_seed0_paper``).

Default plan: weak regime, SFT and TGRPO on all ten tasks with seeds 0, 1, 2, and step-only, trajectory-only
and PPO on Tasks 2, 4 and 10 (where the paper's variants differ most) with the same seeds; paper-level regime,
all five methods on Tasks 2, 4 and 10 (``--paper-tasks``) with the same seeds. Every RL cell of a (task, seed,
regime) starts from the same SFT policy, the one of that (task, seed, regime)'s SFT cell (each RL cell records
the digest of the SFT weights it started from, and the summary names any that differ).

The summary reports both metrics, LIBERO success and *placed* (LIBERO success with the object released in an
undisturbed basket), per regime, method and task (cells run before the placed metric count for LIBERO
success only), the runs that ended below their SFT policy on either metric, and the table's goals on the
placed metric (:data:`GOAL_GAIN_OVER_SFT`, :data:`GOAL_MAX_DROP`) computed from the cells present.

Comparisons on equal terms: every RL cell uses the same lr, KL beta and schedule; step-only and
trajectory-only use the weights (1, 0) and (0, 1) (``libero_tgrpo.config.method_alphas``); a PPO cell runs
until the env steps of the TGRPO cell of its (task, seed) (planned before it), with its value head clipped
apart and trained on normalised targets (:func:`ppo_overrides`). The summary reports the env steps and
optimizer steps of each method and names the cells run under the former protocol.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import SFTSetting, parse_ints, run_in_order
from libero_tgrpo.config import HELDOUT_ALPHAS, METHOD_LABELS
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.paper import PAPER_PPO_AVERAGE, PAPER_TABLE1
from tgrpo.tokenizer import ACTION_DIM

METHOD_ORDER = ("sft", "tgrpo", "step_only", "traj_only", "ppo")
RL_METHODS = METHOD_ORDER[1:]
ABLATIONS = ("step_only", "traj_only", "ppo")
"""The methods run only on the ablation tasks."""
DEFAULT_OUT = "outputs/paper_table"
RAW_ALPHA_DIR = "raw_alpha_cells"
"""Cells run with the paper's raw (not normalised) alpha pairs, under ``--out-dir``; reported apart."""
RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED_FIELDS = ("task", "method", "seed", "regime", "success_rate", "placed_rate", "summary", "alphas",
                    "timings_s", "versions", "machine", "date", "sft_policy", "sft_setting", "protocol")
"""The fields of a cell that ``paper_table.json`` keeps (and ``restore`` brings back)."""
SWEEP_SETTINGS = ("iterations", "lr", "kl_beta")
"""The RL settings ``run`` can change (``--iterations``, ``--lr``, ``--kl-beta``)."""
PPO_VALUE_MAX_GRAD_NORM = 1.0
"""PPO cells clip the value head's gradient to this norm, apart from the policy's (``PPOConfig.value_max_grad_norm``),
and train it on normalised value targets (``PPOConfig.normalize_value_targets``)."""
PPO_ITERATION_CAP_FACTOR = 4
"""PPO cells run until the env steps of the TGRPO cell of the same task and seed (``PPOConfig.env_step_budget``),
for at most this many times TGRPO's iterations."""
REGIMES = ("weak", "paper")
"""Starting regimes: the main job's SFT (weak), and :data:`PAPER_SFT` (paper-level)."""
REGIME_LABELS = {"weak": "weak SFT", "paper": "paper-level SFT"}
PAPER_SFT = SFTSetting(num_demos=100, epochs=100, hidden=(128, 128), demo_until="is_placed", demo_noise=0.2,
                       expert_lift="still")
"""The paper-level regime's SFT, applied to every cell of the regime (:func:`regime_overrides`), with demonstrations
through the release (ended at LIBERO's success, its policies never let go on Tasks 2 and 4: results/self_release/).
100 demonstrations: held-out LIBERO success 90.0%. 20-50 give 79-94%, Tasks 4 and 10 at 99-100% with each
(results/sft_small_check/): the study's rule (smallest >= 85%) now picks 20; the regime stays at 100 until rerun."""
PAPER_SFT_PROVISIONAL = False
"""True while :data:`PAPER_SFT` is a guess; the summary then says so. Held-out: results/sft_release_check/."""
PAPER_TASKS = (2, 4, 10)
"""Tasks of the paper-level regime in the default plan (all five methods)."""
GOAL_METRIC = "placed"
"""The goals are judged on the placed metric (means over seeds)."""
GOAL_GAIN_OVER_SFT = {"weak": 10.0, "paper": 4.6}
"""TGRPO's goal per regime: at least this many points above SFT (mean over tasks of the mean over paired seeds);
4.6 is the paper's TGRPO - SFT (91.0 - 86.4)."""
GOAL_MAX_DROP = 5.0
"""No RL run may end more than this many points below its SFT policy."""
GOAL_MIN_SEEDS = 3
"""A task counts towards a goal when it has at least this many paired seeds (the plan's 3); with no such task the
goal reads "not enough cells"."""


def regime_overrides(regime: str) -> dict[str, Any]:
    """The ``PipelineConfig.replace`` changes of a regime: none for weak (the main job's SFT), :data:`PAPER_SFT`'s
    for paper."""
    if regime not in REGIMES:
        raise ValueError(f"regime {regime!r} is not accepted: choose from {', '.join(REGIMES)}")
    return {} if regime == "weak" else PAPER_SFT.overrides()


def regime_sft(regime: str) -> SFTSetting:
    """The SFT setting of a regime."""
    return SFTSetting.main_job() if regime == "weak" else PAPER_SFT


def regime_of(record: dict[str, Any]) -> str:
    """A cell's regime (cells written before regimes are weak-regime cells)."""
    return str(record.get("regime") or "weak")


@dataclass(frozen=True)
class Cell:
    """One (task, method, seed, regime) of the table: its key and where its files are."""

    task: int
    method: str
    seed: int
    regime: str = "weak"

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise ValueError(f"regime {self.regime!r} is not accepted: choose from {', '.join(REGIMES)}")

    @classmethod
    def of(cls, record: dict[str, Any]) -> Cell:
        """The cell a record (a cell's JSON, a failure record) is about."""
        return cls(int(record["task"]), str(record["method"]), int(record["seed"]), regime_of(record))

    @property
    def suffix(self) -> str:
        """``""`` for the weak regime (the keys cells had before regimes), ``"_paper"`` for the paper-level one."""
        return "" if self.regime == "weak" else f"_{self.regime}"

    @property
    def key(self) -> str:
        """``task4_tgrpo_seed0`` (``task4_tgrpo_seed0_paper``): the cell's file name and its summary key."""
        return f"task{self.task}_{self.method}_seed{self.seed}{self.suffix}"

    @property
    def label(self) -> str:
        """``Task4 tgrpo seed 0`` (``Task4 tgrpo seed 0, paper-level SFT``)."""
        return f"Task{self.task} {self.method} seed {self.seed}" + (
            "" if self.regime == "weak" else f", {REGIME_LABELS[self.regime]}")

    @property
    def is_rl(self) -> bool:
        return self.method != "sft"

    @property
    def sft(self) -> Cell:
        """The SFT cell of the same task, seed and regime (its SFT policy is every RL cell's start)."""
        return Cell(self.task, "sft", self.seed, self.regime)

    @property
    def tgrpo(self) -> Cell:
        """The TGRPO cell of the same task, seed and regime (a PPO cell runs at its env steps)."""
        return Cell(self.task, "tgrpo", self.seed, self.regime)

    def path(self, out_dir: Path) -> Path:
        """The cell's JSON file."""
        return out_dir / "cells" / f"{self.key}.json"

    def failed_path(self, out_dir: Path) -> Path:
        """Where a failed attempt at the cell is recorded."""
        return out_dir / "failed" / f"{self.key}.json"

    def raw_alpha_path(self, out_dir: Path) -> Path:
        """The cell run with the paper's raw alpha pair (reported apart)."""
        return out_dir / RAW_ALPHA_DIR / f"{self.key}.json"

    def run_dir(self, out_dir: Path) -> Path:
        """The run directory shared by the cells of the same task, seed and regime (``sft/``, ``tgrpo/``, ...)."""
        return out_dir / "runs" / f"task{self.task}_seed{self.seed}{self.suffix}"


def plan(tasks: list[int], seeds: list[int], methods: list[str], ablation_tasks: list[int],
         regimes: tuple[str, ...] | list[str] = ("weak",), paper_tasks: list[int] | None = None) -> list[Cell]:
    """The cells to run, in order: per seed, regime and task, SFT first, then the RL methods that apply.

    The weak regime runs ``methods`` on ``tasks``, the ablations (step-only, trajectory-only, PPO) only on
    ``ablation_tasks``; the paper-level regime runs every method of ``methods`` on the ``tasks`` that are in
    ``paper_tasks`` (default: :data:`PAPER_TASKS`).
    """
    bad = [r for r in regimes if r not in REGIMES]
    if bad:
        raise ValueError(f"regimes {bad} are not accepted: choose from {', '.join(REGIMES)}")
    paper = list(PAPER_TASKS) if paper_tasks is None else paper_tasks
    out = []
    for seed in seeds:
        for regime in REGIMES:
            if regime not in regimes:
                continue
            for task in tasks:
                if regime == "paper" and task not in paper:
                    continue
                out += [Cell(task, method, seed, regime) for method in METHOD_ORDER if method in methods and (
                    regime == "paper" or method not in ABLATIONS or task in ablation_tasks)]
    return out


def run_cell(out_dir: Path, cell: Cell, overrides: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (SFT + its evaluation, or an RL method from the cell's SFT policy + evaluation).

    Args:
        out_dir: the table's output directory.
        cell: the cell.
        overrides: changes to the main job's config, ``PipelineConfig.replace`` style (``{"rl.lr": 3e-5}``).
    """
    import torch

    from libero_tgrpo.config import PipelineConfig
    from libero_tgrpo.policies import load_policy
    from libero_tgrpo.stages import eval_config_kwargs, run_demos, run_eval, run_sft, run_train
    from libero_tgrpo.versions import machine, now, versions

    torch.set_num_threads(1)
    task, method, seed = cell.task, cell.method, cell.seed
    run_dir = cell.run_dir(out_dir)
    cfg = PipelineConfig(task=task, seed=seed, method="tgrpo" if method == "sft" else method,
                         output_dir=str(run_dir), video=False).replace(**cell_overrides(out_dir, cell, overrides))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sft_file = run_dir / "sft" / "policy.pt"
    sft_trained_here = not sft_file.is_file()
    if sft_trained_here:
        demos, _ = run_demos(cfg)
        timings["demos"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        policy, spec, _ = run_sft(cfg, demos, run_dir / "sft")
        timings["sft"] = time.perf_counter() - t1
    else:
        policy, spec, _ = load_policy(sft_file)
    extra: dict[str, Any] = {
        "sft_policy": {"weights_sha256": weights_digest(policy), "trained_in_this_cell": sft_trained_here}}
    if method != "sft":
        t1 = time.perf_counter()
        result = run_train(cfg, policy, spec, run_dir / method)
        timings["train"] = time.perf_counter() - t1
        policy, hist = result.policy, result.history
        extra["train"] = {
            "iterations": len(hist),
            "env_steps": hist[-1].get("charts/env_steps") if hist else None,
            "final_group_success": hist[-1].get("charts/success_rate") if hist else None,
            **train_diagnostics(hist),
        }
    t1 = time.perf_counter()
    res = run_eval(policy, task, **eval_config_kwargs(cfg))
    timings["eval"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    return {
        "task": task,
        "method": method,
        "seed": seed,
        "regime": cell.regime,
        "sft_setting": {**asdict(SFTSetting.of_config(cfg)), "hidden": list(cfg.hidden)},
        "success_rate": res["summary"]["success_rate"],
        "placed_rate": res["summary"].get("placed_rate"),
        "summary": res["summary"],
        "successes_per_state": [int(e["success"]) for e in res["episodes"]],
        "placed_per_state": [int(e["placed"]) for e in res["episodes"]],
        "lengths_per_state": [int(e["length"]) for e in res["episodes"]],
        "alphas": list(cfg.alphas) if method in ("tgrpo", "step_only", "traj_only") else None,
        "protocol": protocol(cfg) if method != "sft" else None,
        "config": cfg.to_dict(),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "versions": versions(),
        "machine": machine(),
        "date": now(),
        **extra,
    }


def cell_overrides(out_dir: Path, cell: Cell, overrides: dict[str, Any]) -> dict[str, Any]:
    """The config changes of one cell: its regime's SFT (:func:`regime_overrides`) under the run's ``overrides``
    (which win), plus :func:`ppo_overrides` for a PPO cell (unless ``overrides`` already hold its env-step
    budget, as when a driver computed them for a remote run)."""
    overrides = {**regime_overrides(cell.regime), **overrides}
    if cell.method != "ppo" or "ppo.env_step_budget" in overrides:
        return dict(overrides)
    from libero_tgrpo.config import PipelineConfig

    iterations = overrides.get("rl.iterations", PipelineConfig().rl.iterations)
    return {**overrides, **ppo_overrides(out_dir, cell, iterations)}


def ppo_overrides(out_dir: Path, cell: Cell, iterations: int) -> dict[str, Any]:
    """The PPO cell's changes for a comparison with TGRPO on equal terms: the env-step budget of the TGRPO cell
    of the same task and seed, the value head clipped apart and trained on normalised targets.

    Raises:
        RuntimeError: when that TGRPO cell (or its env-step count) is not there yet.
    """
    tgrpo_cell = cell.tgrpo
    path = tgrpo_cell.path(out_dir)
    steps = (json.loads(path.read_text()).get("train") or {}).get("env_steps") if path.is_file() else None
    if not steps:
        raise RuntimeError(f"{cell.label} runs at the env-step budget of {tgrpo_cell.label}, which has no finished "
                           f"cell with its env steps ({path}): run that cell first (it is planned before PPO).")
    return {"ppo.env_step_budget": int(steps), "ppo.value_max_grad_norm": PPO_VALUE_MAX_GRAD_NORM,
            "ppo.normalize_value_targets": True, "rl.iterations": PPO_ITERATION_CAP_FACTOR * int(iterations)}


def protocol(cfg: Any) -> dict[str, Any]:
    """What makes an RL cell comparable with the others: the same lr, beta, schedule; the ablations' alphas
    (zeroed before normalising); PPO's env-step budget and value-head treatment."""
    rl = cfg.rl_config(Path(cfg.output_dir))
    out: dict[str, Any] = {"lr": rl.lr, "kl_beta": rl.kl_beta, "iterations": rl.iterations}
    if cfg.method == "ppo":
        out.update(env_step_budget=rl.env_step_budget, value_max_grad_norm=rl.value_max_grad_norm,
                   normalize_value_targets=rl.normalize_value_targets)
    else:
        out.update(update_schedule=rl.update_schedule, alphas="zeroed before normalising")
    return out


def weights_digest(policy: Any) -> str:
    """SHA-256 of a policy's weights (names, dtypes, shapes and values; not the file, whose metadata varies), so
    the RL cells of a (task, seed) can be checked to start from the SFT policy that the SFT cell evaluated."""
    from benchmarks.behaviour_digest import state_dict_digest

    return state_dict_digest(policy.state_dict())


def train_diagnostics(history: list[dict[str, Any]]) -> dict[str, float]:
    """What an RL run's log says about its stability and its cost: the policy's entropy per action token (nats)
    at the start and at its highest, the largest and the last KL to the SFT policy, the sampled group's success
    over the last 5 iterations, and the env steps and optimizer steps it took."""
    if not history:
        return {}

    def col(key: str) -> list[float]:
        return [float(h[key]) for h in history if h.get(key) is not None]

    ent = col("losses/entropy_token") or [e / ACTION_DIM for e in col("losses/entropy")]  # older logs: per action
    kl, succ = col("losses/ref_kl"), col("charts/success_rate")
    out: dict[str, float] = {}
    if ent:
        out.update(entropy_token_first=ent[0], entropy_token_max=max(ent))
    if kl:
        out.update(ref_kl_max=max(kl), ref_kl_last=kl[-1])
    if succ:
        out["group_success_last5"] = float(np.mean(succ[-5:]))
    env_steps, opt_steps = col("charts/env_steps"), col("losses/optimizer_steps")
    if env_steps:
        out["env_steps"] = env_steps[-1]
    if opt_steps and len(opt_steps) == len(history):
        out["optimizer_steps"] = float(sum(opt_steps))
    return out


DIAGNOSTICS = ("entropy_token_first", "entropy_token_max", "ref_kl_max", "ref_kl_last", "group_success_last5",
               "env_steps", "optimizer_steps")
LEGACY_ENTROPY = {"entropy_first": "entropy_token_first", "entropy_max": "entropy_token_max"}
"""Diagnostics of cells written before entropy was logged per token: the entropy of a whole action, divided by
its ``ACTION_DIM`` tokens when read."""


def _cell_diagnostics(out_dir: Path, cell: dict[str, Any]) -> dict[str, float]:
    """The cell's training diagnostics, from the cell or (cells written before they were recorded) from the
    run's ``metrics.jsonl`` when it is still on disk."""
    train = dict(cell.get("train") or {})
    for old, new in LEGACY_ENTROPY.items():
        if old in train and new not in train:
            train[new] = train[old] / ACTION_DIM
    if any(k in train for k in DIAGNOSTICS[:5]):
        return {k: train[k] for k in DIAGNOSTICS if train.get(k) is not None}
    c = Cell.of(cell)
    log = c.run_dir(out_dir) / c.method / "metrics.jsonl"
    if not log.is_file():
        return {}
    return train_diagnostics([json.loads(line) for line in log.read_text().splitlines() if line.strip()])


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The changes to the main job's config that ``run``'s flags ask for (``PipelineConfig.replace`` keys)."""
    overrides: dict[str, Any] = {"progress": not args.quiet}
    for key in SWEEP_SETTINGS:
        if getattr(args, key) is not None:
            overrides[f"rl.{key}"] = getattr(args, key)
    if args.states is not None:
        overrides["eval.states"] = tuple(parse_ints(args.states))
    return overrides


def _regimes(text: str) -> tuple[str, ...]:
    regimes = REGIMES if text == "both" else tuple(r.strip() for r in text.split(",") if r.strip())
    bad = [r for r in regimes if r not in REGIMES]
    if bad or not regimes:
        raise SystemExit(f"--regime {text!r} is not accepted: choose weak, paper or both")
    return regimes


def _plan_from(args: argparse.Namespace) -> list[Cell]:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHOD_ORDER]
    if bad:
        raise SystemExit(f"--methods {bad} not accepted: choose from {', '.join(METHOD_ORDER)}")
    return plan(parse_ints(args.tasks), parse_ints(args.seeds), methods, parse_ints(args.ablation_tasks),
                _regimes(args.regime), parse_ints(args.paper_tasks))


def cmd_run(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    cells = _plan_from(args)
    overrides = _overrides(args)
    changed = sorted(key for key in SWEEP_SETTINGS if getattr(args, key) is not None)
    if changed and out_dir.resolve() == Path(DEFAULT_OUT).resolve():
        raise SystemExit(f"--out-dir is the table's own ({DEFAULT_OUT}) but {', '.join(changed)} differ from the "
                         "table's settings; give these runs their own --out-dir (and --results-dir)")
    todo = [c for c in cells if not c.path(out_dir).is_file()]
    print(f"{len(cells)} cells planned, {len(cells) - len(todo)} done, {len(todo)} to run", flush=True)
    if args.ray_address is not None:
        from benchmarks.ray_cells import run_cells_on_ray

        run_cells_on_ray(out_dir, cells, overrides, address=args.ray_address,
                         record=lambda c, p, e: _record(out_dir, c, p, e), cpus_per_cell=args.cpus_per_cell,
                         max_cells=args.max_cells, time_budget_min=args.time_budget_min)
    else:
        run_in_order(todo, lambda c: run_cell(out_dir, c, overrides), lambda c, p, e: _record(out_dir, c, p, e),
                     label=lambda c: f"cell {c.label}", max_n=args.max_cells, time_budget_min=args.time_budget_min)
    if not args.no_summary:
        summarize(out_dir, Path(args.results_dir))
    return 0


def _record(out_dir: Path, cell: Cell, payload: dict[str, Any] | None, error: str | None) -> None:
    """Write a finished cell's JSON (``payload``), or a failed one's error under ``failed/``."""
    if payload is None:
        write_json(cell.failed_path(out_dir), {"task": cell.task, "method": cell.method, "seed": cell.seed,
                                               "regime": cell.regime, "error": error})
        return
    write_json(cell.path(out_dir), payload)
    placed = payload.get("placed_rate")
    print(f"cell {cell.label}: LIBERO success {100 * payload['success_rate']:.0f}%, placed "
          f"{'-' if placed is None else f'{100 * placed:.0f}%'} "
          f"({payload['timings_s']['total']:.0f}s)", flush=True)


def cmd_list(args: argparse.Namespace) -> int:
    out_dir = Path(args.out_dir)
    for c in _plan_from(args):
        path = c.path(out_dir)
        status = "done" if path.is_file() else "todo"
        extra = ""
        if path.is_file():
            d = json.loads(path.read_text())
            placed = d.get("placed_rate")
            extra = f" {100 * d['success_rate']:.0f}%, placed {'-' if placed is None else f'{100 * placed:.0f}%'}"
        print(f"{c.regime:<5} Task{c.task:<3} {c.method:<10} seed {c.seed}: {status}{extra}")
    return 0


# ---------------------------------------------------------------------------------------------- summary
METRICS = {"success": ("success_rate", "LIBERO success"), "placed": ("placed_rate", "placed")}
"""The two metrics of every table: ``{name: (cell field, label)}``."""


def load_cells(out_dir: Path) -> list[dict[str, Any]]:
    """Every finished cell under ``out_dir``."""
    return [json.loads(p.read_text()) for p in sorted((out_dir / "cells").glob("*.json"))]


def _value(cell: dict[str, Any], metric: str) -> float | None:
    """A cell's rate of ``metric`` in percent (None: not recorded, as placed in cells run before that metric)."""
    v = cell.get(METRICS[metric][0])
    return None if v is None else 100 * float(v)


def aggregate(cells: list[dict[str, Any]], metric: str = "success") -> dict[str, dict[int, dict[str, Any]]]:
    """``{method: {task: {mean, std, min, max, n, seeds, values}}}`` of ``metric`` in percent, over the cells that
    record it."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for c in cells:
        v = _value(c, metric)
        if v is None:
            continue
        out.setdefault(c["method"], {}).setdefault(int(c["task"]), {"values": [], "seeds": []})
        out[c["method"]][int(c["task"])]["values"].append(v)
        out[c["method"]][int(c["task"])]["seeds"].append(c["seed"])
    for per_task in out.values():
        for stats in per_task.values():
            v = np.array(stats["values"], dtype=float)
            stats.update(mean=float(v.mean()), std=float(v.std(ddof=1)) if v.size > 1 else 0.0,
                         min=float(v.min()), max=float(v.max()), n=int(v.size))
    return out


def _rates(cells: list[dict[str, Any]], metric: str = "success") -> dict[Cell, float]:
    """``{cell: rate in percent}`` of the cells that record ``metric``."""
    return {Cell.of(c): v for c in cells if (v := _value(c, metric)) is not None}


def _paired_diffs(cells: list[dict[str, Any]], a: str, b: str, metric: str) -> list[tuple[int, float]]:
    """``[(task, a - b)]`` (points), one per (task, seed, regime) pair where both methods have ``metric``, in the
    cells' order."""
    by = _rates(cells, metric)
    return [(c.task, by[c] - by[Cell(c.task, b, c.seed, c.regime)]) for c in by
            if c.method == a and Cell(c.task, b, c.seed, c.regime) in by]


def _per_task(diffs: list[tuple[int, float]]) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for task, d in sorted(diffs, key=lambda td: td[0]):
        out.setdefault(task, []).append(d)
    return out


def _paired_delta(cells: list[dict[str, Any]], a: str, b: str, metric: str = "success") -> dict[str, Any] | None:
    """Mean over (task, seed) pairs present for both methods of ``a - b`` (points), and per task."""
    pairs = _paired_diffs(cells, a, b, metric)
    if not pairs:
        return None
    diffs = np.array([d for _, d in pairs])
    per_task = {t: float(np.mean(ds)) for t, ds in _per_task(pairs).items()}
    return {"mean": float(diffs.mean()), "std": float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0,
            "pairs": int(diffs.size), "tasks": sorted(per_task), "per_task": per_task,
            "mean_over_tasks": float(np.mean(list(per_task.values())))}


def _sft_digest(cell: dict[str, Any]) -> str | None:
    """Digest of the SFT weights the cell started from (``None`` for cells that did not record it)."""
    return (cell.get("sft_policy") or {}).get("weights_sha256")


def _setting(config: dict[str, Any], key: str) -> Any:
    """An RL setting of a cell's recorded config (``config["rl"][key]``; cells written before the config
    had parts hold it at the top level)."""
    return (config.get("rl") or {}).get(key, config.get(key))


def _changed_settings(cells: list[dict[str, Any]]) -> list[str]:
    """``"lr 3e-05 (6 RL cells)"``-style notes on the RL cells run with other settings than the defaults."""
    from libero_tgrpo.config import PipelineConfig

    default = PipelineConfig().rl
    found: dict[tuple[str, Any], int] = {}
    for c in cells:
        if c["method"] == "sft":
            continue
        cfg = c.get("config") or {}
        for key in SWEEP_SETTINGS:  # a PPO cell's iterations are its cap: PPO_ITERATION_CAP_FACTOR x the run's
            value, cap = _setting(cfg, key), PPO_ITERATION_CAP_FACTOR if (key, c["method"]) == ("iterations", "ppo") else 1
            if value is not None and value != cap * getattr(default, key):
                found[(key, value)] = found.get((key, value), 0) + 1

    def fmt(v: Any) -> str:
        return f"{v:g}" if isinstance(v, (int, float)) else str(v)

    return [f"{k.replace('_', ' ')} {fmt(v)} ({n} RL cell{'s' if n > 1 else ''}; default {fmt(getattr(default, k))})"
            for (k, v), n in sorted(found.items(), key=str)]


@dataclass
class Table:
    """What the summary's sections are built from: the cells, per regime, and their aggregates per metric."""

    out_dir: Path
    cells: list[dict[str, Any]]
    regimes: list[str]
    by_regime: dict[str, list[dict[str, Any]]]
    agg: dict[str, dict[str, dict[str, dict[int, dict[str, Any]]]]]
    """``{regime: {metric: aggregate}}``."""
    tasks: dict[str, list[int]]
    methods: dict[str, list[str]]
    deltas: dict[str, dict[str, dict[str, dict[str, Any] | None]]]
    """``{regime: {metric: {"tgrpo-<baseline>": paired delta}}}``."""
    rates: dict[str, dict[Cell, float]]
    """``{metric: {cell: rate in percent}}``."""

    @classmethod
    def load(cls, out_dir: Path) -> Table | None:
        cells = load_cells(out_dir)
        if not cells:
            return None
        by_regime = {r: [c for c in cells if regime_of(c) == r] for r in REGIMES}
        regimes = [r for r in REGIMES if by_regime[r]]
        agg = {r: {m: aggregate(by_regime[r], m) for m in METRICS} for r in regimes}
        methods = {r: [m for m in METHOD_ORDER if m in agg[r]["success"]] for r in regimes}
        return cls(out_dir=out_dir, cells=cells, regimes=regimes, by_regime=by_regime, agg=agg,
                   tasks={r: sorted({int(c["task"]) for c in by_regime[r]}) for r in regimes}, methods=methods,
                   deltas={r: {m: {f"tgrpo-{b}": _paired_delta(by_regime[r], "tgrpo", b, m) for b in methods[r]
                                   if b != "tgrpo"} for m in METRICS} for r in regimes},
                   rates={m: _rates(cells, m) for m in METRICS})

    @property
    def all_tasks(self) -> list[int]:
        return sorted({int(c["task"]) for c in self.cells})

    def sft_rate(self, cell: dict[str, Any], metric: str = "success") -> float | None:
        """``metric`` (%) of the SFT cell of a cell's task, seed and regime."""
        return self.rates[metric].get(Cell.of(cell).sft)

    def head(self, tasks: list[int]) -> list[str]:
        return ["| method | " + " | ".join(f"T{t}" for t in tasks) + " | avg over these tasks |",
                "|---" * (len(tasks) + 2) + "|"]


def _sort_key(c: dict[str, Any]) -> tuple[int, int, int, int]:
    return REGIMES.index(regime_of(c)), METHOD_ORDER.index(c["method"]), int(c["task"]), int(c["seed"])


def _name(c: dict[str, Any]) -> str:
    """``T4 PPO seed 0`` (``..., paper-level SFT``)."""
    regime = regime_of(c)
    return f"T{c['task']} {METHOD_LABELS[c['method']]} seed {c['seed']}" + (
        "" if regime == "weak" else f" ({REGIME_LABELS[regime]})")


def _csv(t: Table) -> str:
    w = csv.writer(f := io.StringIO())
    w.writerow(["regime", "metric", "task", "method", "n_seeds", "seeds", "mean", "std", "min", "max", "values",
                "paper"])
    for r in t.regimes:
        for metric in METRICS:
            for m in t.methods[r]:
                for task in t.tasks[r]:
                    s = t.agg[r][metric].get(m, {}).get(task)
                    if s is None:
                        continue
                    paper = PAPER_TABLE1.get(m, {}).get(task, "") if metric == "success" else ""
                    w.writerow([r, metric, task, m, s["n"], " ".join(map(str, s["seeds"])), f"{s['mean']:.1f}",
                                f"{s['std']:.1f}", f"{s['min']:.0f}", f"{s['max']:.0f}",
                                " ".join(f"{v:.0f}" for v in s["values"]), paper])
    return f.getvalue()


def _regime_sft_line(t: Table, regime: str) -> str:
    """The regime's SFT setting, whether it is provisional, and the cells trained with another (or unrecorded)
    setting."""
    expected = regime_sft(regime)
    line = f"SFT of this regime: {expected.describe()}"
    if regime == "paper":
        line += " (`PAPER_SFT`" + (", **provisional**: not yet the choice of the SFT regime study, "
                                   "`python -m benchmarks.tuning_sweep run --study sft`)" if PAPER_SFT_PROVISIONAL
                                   else ", the SFT regime study's choice)")
    line += "."
    cells = t.by_regime[regime]
    recorded = [SFTSetting.of(c["sft_setting"]) for c in cells if c.get("sft_setting")]
    other: dict[str, int] = {}
    for st in recorded:
        if st != expected:
            other[st.describe()] = other.get(st.describe(), 0) + 1
    if other:
        line += " Cells trained with another SFT setting: " + "; ".join(f"{k} ({n})" for k, n in other.items()) + "."
    if len(recorded) < len(cells):
        line += f" {len(cells) - len(recorded)} of its {len(cells)} cells do not record their SFT setting (run before it was recorded)."
    return line


def _section_ours(t: Table) -> list[str]:
    def fmt(s: dict[str, Any] | None) -> str:
        if s is None:
            return "-"
        return f"{s['mean']:.1f} ± {s['std']:.1f} ({s['n']})" if s["n"] > 1 else f"{s['mean']:.0f} (1)"

    lines = [
        "# Table 1 on our runs: LIBERO-Object, built-in state policy",
        "",
        "Two metrics over the 50 benchmark states (greedy, 280 steps): *LIBERO success* (LIBERO's predicate, as in "
        "the paper) and *placed* (LIBERO success, then the object released in an undisturbed basket). Mean ± standard "
        "deviation over seeds (number of seeds in brackets). Every RL run of a (task, seed, regime) starts from that "
        "seed's SFT policy of the regime. "
        "TGRPO uses the paper's α ratio, normalised to α1 + α2 = 1 (Tasks 4, 5, 6, 9, 10 sum to 1), but " + "; ".join(
            f"{p} on Tasks {', '.join(str(t) for t, q in HELDOUT_ALPHAS.items() if q == p)}" for p in dict.fromkeys(
                HELDOUT_ALPHAS.values())) + ", chosen on held-out placements (`docs/pipeline.md`); step-only is (1, 0) and "
        "trajectory-only (0, 1) (zeroed before normalising), all with the same β, learning rate and schedule. "
        "Paper: OpenVLA-7B, best of several runs (SPEC §4).",
        "",
        "Regimes: *weak*, the main job's SFT (" + regime_sft("weak").describe() + "); *paper-level*, `PAPER_SFT` ("
        + PAPER_SFT.describe() + (", provisional until the SFT regime study has chosen it" if PAPER_SFT_PROVISIONAL
                                  else ", chosen by the SFT regime study; 20-50 demonstrations, since run, meet its rule too: "
                                  "`sft_small_check/`") + ").",
    ]
    for r in t.regimes:
        tasks = t.tasks[r]
        lines += ["", f"## Ours, {'weak' if r == 'weak' else 'paper-level'} regime", "",
                  _regime_sft_line(t, r)]
        for metric, (_, label) in METRICS.items():
            lines += ["", f"### {label[0].upper() + label[1:]} (%)", "", *t.head(tasks)]
            for m in t.methods[r]:
                agg = t.agg[r][metric].get(m, {})
                row = [fmt(agg.get(task)) for task in tasks]
                means = [agg[task]["mean"] for task in tasks if task in agg]
                n = len(means)
                avg = "-" if not n else f"{np.mean(means):.1f}" + (
                    "" if n == len(tasks) else f" ({n} task{'s' if n > 1 else ''})")
                lines.append(f"| {METHOD_LABELS[m]} | " + " | ".join(row) + f" | {avg} |")
        missing = [c for c in t.by_regime[r] if _value(c, "placed") is None]
        if missing:
            lines += ["", f"{len(missing)} of the regime's {len(t.by_regime[r])} cells have no placed rate (run before "
                      "the metric): they count in LIBERO success only, '-' in placed."]
    changed = _changed_settings(t.cells)
    if changed:
        lines += ["", "RL settings that differ from the main job's (and the table's): " + "; ".join(changed) + "."]
    return lines


def _section_paper(t: Table) -> list[str]:
    tasks = t.all_tasks
    lines = ["", "## Paper (Table 1) on the same tasks", "", "LIBERO success (%); the paper has no placed metric.",
             "", *t.head(tasks)]
    for m in METHOD_ORDER:
        if m == "ppo":
            lines.append("| PPO | " + " | ".join("-" for _ in tasks) + f" | {PAPER_PPO_AVERAGE} (all 10 tasks) |")
            continue
        vals = [PAPER_TABLE1[m][task] for task in tasks]
        lines.append(f"| {METHOD_LABELS[m]} | " + " | ".join(str(v) for v in vals) + f" | {np.mean(vals):.1f} |")
    return lines


def _section_deltas(t: Table) -> list[str]:
    lines = ["", "## TGRPO minus each baseline (points, paired by task and seed)", "",
             "| regime | comparison | metric | mean over pairs | std | pairs | tasks | mean over tasks | per task |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in t.regimes:
        for name in t.deltas[r]["success"]:
            for metric, (_, label) in METRICS.items():
                d = t.deltas[r][metric].get(name)
                if d is None:
                    continue
                per = ", ".join(f"T{task} {v:+.1f}" for task, v in d["per_task"].items())
                lines.append(f"| {r} | TGRPO - {METHOD_LABELS[name.split('-', 1)[1]]} | {label} | {d['mean']:+.1f} | "
                             f"{d['std']:.1f} | {d['pairs']} | {len(d['tasks'])} | {d['mean_over_tasks']:+.1f} | "
                             f"{per} |")
    ablated = {(regime_of(c), int(c["task"])) for c in t.cells if c["method"] in ("step_only", "traj_only")}
    alphas = {(regime_of(c), int(c["task"])): c["alphas"] for c in t.cells if c["method"] == "tgrpo" and c.get("alphas")}
    mix = [f"{r} T{k} ({alphas[r, k][0]:.2f}, {alphas[r, k][1]:.2f})" for r, k in sorted(
        ablated & alphas.keys(), key=lambda rk: (REGIMES.index(rk[0]), rk[1]))]
    return lines + (["", "TGRPO's (α1, α2) on the tasks with ablation cells (step-level, trajectory-level weight): "
                     + "; ".join(mix) + ". Where α1 dominates, TGRPO's advantage is close to step-only's."] if mix else [])


def goals(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The goals on :data:`GOAL_METRIC`, computed from ``cells``, per regime that has cells.

    TGRPO's gain over SFT (:data:`GOAL_GAIN_OVER_SFT`) and its lead over step-only, trajectory-only and PPO
    (> 0) are means over tasks of the per-task mean of the seed-paired differences, over the tasks with at least
    :data:`GOAL_MIN_SEEDS` paired seeds; the drop goal asks that no RL run end more than :data:`GOAL_MAX_DROP`
    points below the SFT policy of its task, seed and regime. Each goal of each regime is ``met``, ``missed`` or
    ``not enough cells`` (no task with enough paired seeds; no RL run with the metric on both sides).
    """
    metric = GOAL_METRIC
    out: list[dict[str, Any]] = []
    for regime in REGIMES:  # every goal is listed; a regime without cells reads "not enough cells"
        rc = [c for c in cells if regime_of(c) == regime]
        gain = GOAL_GAIN_OVER_SFT[regime]
        for baseline, threshold, text in [("sft", gain, f"TGRPO >= SFT + {gain:g}"),
                                          *[(b, 0.0, f"TGRPO above {METHOD_LABELS[b]}") for b in ABLATIONS]]:
            per = _per_task(_paired_diffs(rc, "tgrpo", baseline, metric))
            enough = {task: ds for task, ds in per.items() if len(ds) >= GOAL_MIN_SEEDS}
            short = sorted(set(per) - set(enough))
            g: dict[str, Any] = {"regime": regime, "goal": text, "threshold": threshold, "baseline": baseline,
                                 "tasks": sorted(enough), "tasks_short_of_seeds": short,
                                 "pairs": sum(len(ds) for ds in enough.values())}
            if not enough:
                g.update(value=None, verdict="not enough cells")
            else:
                value = float(np.mean([np.mean(ds) for ds in enough.values()]))
                met = value >= threshold if baseline == "sft" else value > threshold
                g.update(value=value, verdict="met" if met else "missed",
                         per_task={task: float(np.mean(ds)) for task, ds in enough.items()})
            out.append(g)
        sft = _rates([c for c in rc if c["method"] == "sft"], metric)
        runs = [(c, v - sft[Cell.of(c).sft]) for c in rc if c["method"] != "sft"
                and (v := _value(c, metric)) is not None and Cell.of(c).sft in sft]
        worse = sorted((c for c, d in runs if d < -GOAL_MAX_DROP), key=_sort_key)
        g = {"regime": regime, "goal": f"no RL run more than {GOAL_MAX_DROP:g} points below its SFT",
             "threshold": -GOAL_MAX_DROP, "baseline": "sft", "runs": len(runs),
             "value": min(d for _, d in runs) if runs else None,
             "runs_below": [Cell.of(c).key for c in worse]}
        g["verdict"] = "not enough cells" if not runs else ("missed" if worse else "met")
        out.append(g)
    return out


def _section_goals(t: Table) -> list[str]:
    lines = ["", f"## Goals ({GOAL_METRIC}, means over seeds)", "",
             f"Computed from the cells present. A task counts when it has at least {GOAL_MIN_SEEDS} seeds paired "
             "between the two methods; the value is the mean over those tasks of the per-task mean difference "
             "(points). The drop goal's value is the lowest RL-minus-SFT difference over the runs.", "",
             "| regime | goal | value | verdict | based on |", "|---|---|---|---|---|"]
    for g in goals(t.cells):
        value = "-" if g["value"] is None else f"{g['value']:+.1f}"
        if "runs" in g:
            basis = f"{g['runs']} RL runs with {GOAL_METRIC} on both sides"
            if g["runs_below"]:
                basis += "; below by more: " + ", ".join(g["runs_below"])
        else:
            basis = (f"{g['pairs']} pairs on {', '.join(f'T{x}' for x in g['tasks'])}" if g["tasks"]
                     else "no task with enough paired seeds")
            if g["tasks_short_of_seeds"]:
                basis += f"; fewer than {GOAL_MIN_SEEDS} seeds: " + ", ".join(f"T{x}" for x in g["tasks_short_of_seeds"])
        if g["regime"] == "paper" and PAPER_SFT_PROVISIONAL:
            basis += " (PAPER_SFT provisional)"
        verdict = f"**{g['verdict']}**" if g["verdict"] == "missed" else g["verdict"]
        lines.append(f"| {g['regime']} | {g['goal']} | {value} | {verdict} | {basis} |")
    return lines


def _section_failed_and_restarted(t: Table) -> list[str]:
    lines: list[str] = []
    failed = []
    for p in sorted((t.out_dir / "failed").glob("*.json")):
        f = json.loads(p.read_text())
        if not Cell.of(f).path(t.out_dir).is_file():
            failed.append(f"{Cell.of(f).label} ({f['error']})")
    if failed:
        lines += ["", "Failed cells (rerun `run` to retry them): " + "; ".join(failed) + "."]
    sft_digest = {Cell.of(c): _sft_digest(c) for c in t.cells if c["method"] == "sft"}
    other_start = [c for c in t.cells if c["method"] != "sft" and _sft_digest(c)
                   and sft_digest.get(Cell.of(c).sft) not in (None, _sft_digest(c))]
    if other_start:
        lines += ["", "Started from other SFT weights than their SFT cell evaluated (the SFT policy was retrained): "
                  + ", ".join(_name(c) for c in sorted(other_start, key=_sort_key)) + "."]
    return lines


def _diagnostics(t: Table) -> dict[str, dict[str, float]]:
    return {Cell.of(c).key: _cell_diagnostics(t.out_dir, c) for c in t.cells if c["method"] != "sft"}


def _section_drops(t: Table, diagnostics: dict[str, dict[str, float]]) -> list[str]:
    """RL runs that ended below their SFT policy on LIBERO success or on placed, with their training log."""
    rl = [c for c in t.cells if c["method"] != "sft"]

    def below(c: dict[str, Any], metric: str) -> bool:
        v, s = _value(c, metric), t.sft_rate(c, metric)
        return v is not None and s is not None and v < s

    counts = {m: (sum(below(c, m) for c in rl), sum(_value(c, m) is not None and t.sft_rate(c, m) is not None
                                                     for c in rl)) for m in METRICS}
    drops = sorted((c for c in rl if below(c, "success") or below(c, "placed")), key=_sort_key)
    if not drops:
        return []
    no_placed = sum(_value(c, "placed") is None or t.sft_rate(c, "placed") is None for c in rl)
    lines = ["", "## RL runs that ended below their SFT policy", "",
             f"LIBERO success: {counts['success'][0]} of {counts['success'][1]} RL runs; placed: {counts['placed'][0]} of "
             f"{counts['placed'][1]} RL runs with a placed rate on both sides ({no_placed} without). Entropy is the "
             "policy's mean per-token entropy (nats) on "
             "the sampled rollouts, KL the estimate of KL to the SFT policy in the loss, group success the "
             "sampled (not greedy) success over the last 5 iterations; all from the run's training log.", "",
             "| regime | task | method | seed | SFT | after RL | SFT placed | placed after RL | entropy first → max | "
             "KL to SFT max / last | group success, last 5 |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    for c in drops:
        d = diagnostics[Cell.of(c).key]
        ent = f"{d['entropy_token_first']:.2f} → {d['entropy_token_max']:.2f}" if "entropy_token_max" in d else "-"
        kl = f"{d['ref_kl_max']:.2f} / {d['ref_kl_last']:.2f}" if "ref_kl_max" in d else "-"
        gs = f"{100 * d['group_success_last5']:.0f}%" if "group_success_last5" in d else "-"
        lines.append(f"| {regime_of(c)} | T{c['task']} | {METHOD_LABELS[c['method']]} | {c['seed']} | "
                     f"{pct(t.sft_rate(c))} | {pct(_value(c, 'success'))} | {pct(t.sft_rate(c, 'placed'))} | "
                     f"{pct(_value(c, 'placed'))} | {ent} | {kl} | {gs} |")
    return lines


def _section_budget(t: Table, diagnostics: dict[str, dict[str, float]]) -> list[str]:
    """Env steps and optimizer steps per regime and RL method (mean over its cells that logged them), and the
    cells run under the former protocol (ablation alphas zeroed after normalising; PPO without the matched
    budget)."""
    lines = ["", "## Training budget per method", "",
             "Mean over the method's cells that logged them. PPO cells run until the env steps of the TGRPO cell "
             "of the same task, seed and regime, with the value head clipped apart and trained on normalised "
             "targets.", "",
             "| regime | method | cells | env steps | optimizer steps |", "|---|---|---|---|---|"]
    for r in t.regimes:
        for m in t.methods[r]:
            if m == "sft":
                continue
            ds = [diagnostics.get(Cell.of(c).key, {}) for c in t.by_regime[r] if c["method"] == m]
            env = [d["env_steps"] for d in ds if "env_steps" in d]
            opt = [d["optimizer_steps"] for d in ds if "optimizer_steps" in d]
            lines.append(f"| {r} | {METHOD_LABELS[m]} | {len(ds)} | "
                         f"{f'{np.mean(env):.0f} ({len(env)})' if env else '-'} | "
                         f"{f'{np.mean(opt):.0f} ({len(opt)})' if opt else '-'} |")
    former = sorted((c for c in t.cells if _former_protocol(c)), key=_sort_key)
    if former:
        lines += ["", "Run under the former protocol (ablations with the weight zeroed after normalising, PPO "
                  "without the matched env-step budget), to be rerun for a like-for-like comparison: "
                  + ", ".join(_name(c) for c in former) + "."]
    return lines


def _former_protocol(cell: dict[str, Any]) -> bool:
    if cell["method"] in ("step_only", "traj_only"):
        expected = [1.0, 0.0] if cell["method"] == "step_only" else [0.0, 1.0]
        return cell.get("alphas") is not None and [float(a) for a in cell["alphas"]] != expected
    if cell["method"] == "ppo":
        return not (cell.get("protocol") or {}).get("env_step_budget")
    return False


def _raw_alpha_cells(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((out_dir / RAW_ALPHA_DIR).glob("*.json"))]


def _section_raw_alpha(t: Table, raw: list[dict[str, Any]]) -> list[str]:
    if not raw:
        return []
    lines = ["", "## With the paper's raw α (not normalised)", "",
             "Kept for the record; not in the tables above. Same settings otherwise.", "",
             "| task | method | seed | α1, α2 | success | SFT of the same seed |", "|---|---|---|---|---|---|"]
    for c in raw:
        sft = t.sft_rate(c)
        alphas = ", ".join(f"{a:g}" for a in c.get("alphas") or [])
        lines.append(f"| T{c['task']} | {METHOD_LABELS[c['method']]} | {c['seed']} | {alphas} | "
                     f"{100 * c['success_rate']:.0f} | {'-' if sft is None else f'{sft:.0f}'} |")
    return lines


def _section_footer(t: Table) -> list[str]:
    weak = t.tasks.get("weak", [])
    missing_tasks = [task for task in range(1, 11) if task not in weak]
    vers = next((c["versions"] for c in t.cells if c.get("versions")), {})
    mach = next((c["machine"] for c in t.cells if c.get("machine")), {})
    per_regime = ", ".join(f"{len(t.by_regime[r])} {r}" for r in t.regimes)
    return ["", f"Cells finished: {len(t.cells)} ({per_regime})." + (
        f" Tasks not run yet in the weak regime: {', '.join(f'T{task}' for task in missing_tasks)}."
        if missing_tasks else ""),
        "Command: `python -m benchmarks.paper_table run` (resumable), then `python -m benchmarks.paper_table summary`; "
        "in a fresh checkout, `python -m benchmarks.paper_table restore` first brings back the cells above.",
        "", "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()),
        f"Machine: {mach.get('cpu_model', '?')} ({mach.get('cpu_count', '?')} cores).",
        "", "![bar chart](paper_table.png)", ""]


def summarize(out_dir: Path, results_dir: Path = RESULTS) -> dict[str, Any] | None:
    """Write ``paper_table.{md,csv,json,png}`` to ``results_dir`` from the cells under ``out_dir``."""
    t = Table.load(out_dir)
    if t is None:
        print(f"no finished cells under {out_dir}; nothing to summarise", flush=True)
        return None
    diagnostics = _diagnostics(t)
    raw = _raw_alpha_cells(out_dir)
    lines = (_section_ours(t) + _section_paper(t) + _section_deltas(t) + _section_goals(t)
             + _section_failed_and_restarted(t) + _section_drops(t, diagnostics) + _section_budget(t, diagnostics)
             + _section_raw_alpha(t, raw) + _section_footer(t))
    write_text(results_dir / "paper_table.csv", _csv(t))
    write_text(results_dir / "paper_table.md", "\n".join(lines))
    payload = {"regimes": {r: {"sft_setting": {**asdict(regime_sft(r)), "hidden": list(regime_sft(r).hidden)},
                               "provisional": r == "paper" and PAPER_SFT_PROVISIONAL} for r in REGIMES},
               "aggregate": {r: {m: {meth: {str(task): s for task, s in v.items()} for meth, v in t.agg[r][m].items()}
                                 for m in METRICS} for r in t.regimes},
               "deltas": t.deltas,
               "goals": goals(t.cells),
               "cells": [{k: c[k] for k in PUBLISHED_FIELDS if k in c}
                         for c in (dict(c, regime=regime_of(c)) for c in t.cells)],
               "train_diagnostics": diagnostics,
               "raw_alpha_cells": [{k: c[k] for k in ("task", "method", "seed", "success_rate", "alphas", "date")
                                    if k in c} for c in raw],
               "paper_table1": PAPER_TABLE1, "paper_ppo_average": PAPER_PPO_AVERAGE}
    write_json(results_dir / "paper_table.json", payload)
    _plot(t, results_dir / "paper_table.png")
    print(f"wrote {results_dir / 'paper_table.md'} ({len(t.cells)} cells)", flush=True)
    return payload


def _plot(t: Table, path: Path) -> None:
    """Bars of each method per task, mean ± std over seeds, dots for single seeds: per regime, a panel of LIBERO
    success (the paper's Table 1 as diamonds) above a panel of placed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib not installed: bar chart skipped", file=sys.stderr)
        return
    n_tasks = max(len(t.tasks[r]) for r in t.regimes)
    fig = Figure(figsize=(max(7, 1.8 * n_tasks + 3), 3.8 * len(METRICS) * len(t.regimes)))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(t.regimes) * len(METRICS), 1, squeeze=False).reshape(len(t.regimes), len(METRICS))
    for row, r in enumerate(t.regimes):
        tasks, methods = t.tasks[r], t.methods[r]
        width = 0.8 / max(len(methods), 1)
        x = np.arange(len(tasks))
        for col, (metric, (_, label)) in enumerate(METRICS.items()):
            ax = axes[row, col]
            agg = t.agg[r][metric]
            for j, m in enumerate(methods):
                a = agg.get(m, {})
                means = [a[k]["mean"] if k in a else np.nan for k in tasks]
                stds = [a[k]["std"] if k in a else 0 for k in tasks]
                pos = x - 0.4 + width * (j + 0.5)
                ax.bar(pos, means, width, yerr=stds, capsize=3, ecolor="dimgray", label=f"{METHOD_LABELS[m]} (ours)",
                       color=f"C{METHOD_ORDER.index(m)}")
                for i, k in enumerate(tasks):
                    if k in a:
                        ax.scatter([pos[i]] * a[k]["n"], a[k]["values"], s=10, color="black", zorder=3,
                                   label="one seed (ours)" if j == 0 and i == 0 else None)
                if metric == "success":
                    paper = [PAPER_TABLE1.get(m, {}).get(k, np.nan) for k in tasks]
                    ax.scatter(pos, paper, marker="D", s=40, facecolor="white", edgecolor="red", zorder=4,
                               label="paper (OpenVLA-7B)" if j == 0 else None)
            if not agg:
                ax.text(0.5, 0.5, "no cell with this metric yet", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks(x)
            ax.set_xticklabels([f"Task{k}" for k in tasks])
            ax.set_ylabel(f"{label} (%)")
            ax.set_ylim(0, 105)
            ax.set_title(f"{REGIME_LABELS[r]}: {label} (bars: mean ± std over seeds)", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)


def restore(source: Path, out_dir: Path) -> int:
    """Write the cells of a summary JSON (``paper_table.json``) under ``out_dir``; return how many were written.

    A cell already under ``out_dir`` is kept as it is. Training diagnostics go back into the cell's ``train``
    record, raw-alpha cells into their own directory; each restored cell says where it came from.
    """
    try:
        payload = json.loads(source.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"cannot read the summary {source}: {e}") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("cells"), list):
        raise SystemExit(f"{source} is not a paper-table summary (no 'cells' list)")
    diagnostics = payload.get("train_diagnostics") or {}
    written = 0
    for c in payload["cells"]:
        path = Cell.of(c).path(out_dir)
        if path.is_file():
            continue
        cell = dict(c, restored_from=str(source))
        d = diagnostics.get(Cell.of(c).key)
        if d:
            cell["train"] = dict(d)
        write_json(path, cell)
        written += 1
    for c in payload.get("raw_alpha_cells") or []:
        path = Cell.of(c).raw_alpha_path(out_dir)
        if not path.is_file():
            write_json(path, dict(c, restored_from=str(source)))
            written += 1
    return written


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.paper_table", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("run", "list"):
        p = sub.add_parser(name, help="run the missing cells" if name == "run" else "show the plan and what is done")
        p.add_argument("--tasks", default="1-10", help="tasks (default: %(default)s)")
        p.add_argument("--seeds", default="0-2", help="seeds (default: %(default)s)")
        p.add_argument("--methods", default=",".join(METHOD_ORDER), help="methods (default: %(default)s)")
        p.add_argument("--ablation-tasks", default="2,4,10",
                       help="weak regime: tasks of step-only, trajectory-only and PPO (default: %(default)s)")
        p.add_argument("--regime", default="both",
                       help="weak (the main job's SFT), paper (PAPER_SFT) or both (default: %(default)s)")
        p.add_argument("--paper-tasks", default=",".join(map(str, PAPER_TASKS)),
                       help="paper-level regime: its tasks, all five methods (default: %(default)s)")
        p.add_argument("--out-dir", default=DEFAULT_OUT, help="cells and runs (default: %(default)s)")
        if name == "run":
            p.add_argument("--max-cells", type=int, default=None, help="stop after this many new cells")
            p.add_argument("--time-budget-min", type=float, default=None,
                           help="start no new cell after this many minutes")
            p.add_argument("--iterations", type=int, default=None, help="RL iterations (default: the main job's)")
            p.add_argument("--lr", type=float, default=None, help="RL learning rate (default: the main job's)")
            p.add_argument("--kl-beta", type=float, default=None,
                           help="weight of the KL penalty to the SFT policy (default: the main job's)")
            p.add_argument("--states", default=None, help="evaluation states (default: all 50)")
            p.add_argument("--results-dir", default=str(RESULTS), help="where the summary goes (default: %(default)s)")
            p.add_argument("--no-summary", action="store_true", help="do not rebuild the summary at the end")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
            p.add_argument("--ray-address", default=None,
                           help="run the cells as Ray tasks on this cluster ('auto', 'ray://head:10001', or "
                                "'local' for a new local one); default: one after another in this process")
            p.add_argument("--cpus-per-cell", type=float, default=2.0,
                           help="Ray CPUs each cell reserves (default: %(default)s)")
    p = sub.add_parser("summary", help="build the tables and the chart from the finished cells")
    p.add_argument("--out-dir", default=DEFAULT_OUT, help="cells (default: %(default)s)")
    p.add_argument("--results-dir", default=str(RESULTS), help="where to write (default: %(default)s)")
    p = sub.add_parser("restore", help="write the cells of a published summary back under --out-dir")
    p.add_argument("--from", dest="source", default=str(RESULTS / "paper_table.json"),
                   help="summary JSON (default: %(default)s)")
    p.add_argument("--out-dir", default=DEFAULT_OUT, help="cells (default: %(default)s)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "list":
        return cmd_list(args)
    if args.command == "restore":
        n = restore(Path(args.source), Path(args.out_dir))
        print(f"restored {n} cells from {args.source} under {args.out_dir}", flush=True)
        return 0
    summarize(Path(args.out_dir), Path(args.results_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
