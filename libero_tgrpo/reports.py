"""What a finished run reports: its summary, the before/after table, ``results.md``, and recording it.

:func:`build_summary` gathers a run's results into ``summary.json``'s content; :func:`results_markdown` and
:func:`table_and_verdict` render it; :func:`record_run` copies a run's report into ``benchmarks/results/``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from libero_tgrpo.config import METHOD_LABELS, PipelineConfig
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.options import OPTIONS, SECTIONS, command_line, from_options
from libero_tgrpo.paper import PAPER_TABLE1
from libero_tgrpo.progress import say as _default_say
from libero_tgrpo.versions import machine, now, versions

__all__ = ["before_after_table", "build_summary", "table_and_verdict", "results_markdown", "timings_line",
           "record_run", "config_from_summary"]

WARMUP_STEPS = 10
"""Warm-up steps of ``[0,0,0,0,0,0,-1]`` after each reset, before the policy acts (libero_gym's convention)."""


def before_after_table(rows: Sequence[tuple[str, dict[str, Any]]], task: int, paper: bool = True) -> str:
    """Markdown table of evaluation results (``rows`` = ``[(name, evaluation result), ...]``)."""
    lines = [
        "| policy | LIBERO success | placed | mean length | mean length (successes) | paper (OpenVLA-7B, LIBERO) |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in rows:
        s = res["summary"]
        key = {"SFT": "sft", "TGRPO": "tgrpo"}.get(name)
        ref = f"{PAPER_TABLE1[key][task]}%" if paper and key else "-"
        mls = "-" if s["mean_length_success"] is None else f"{s['mean_length_success']:.0f}"
        lines.append(
            f"| {name} | {_rate(s['success_rate'], s['successes'], s['episodes'])} | "
            f"{_rate(s.get('placed_rate'), s.get('placed'), s['episodes'])} | {s['mean_length']:.0f} | {mls} | {ref} |"
        )
    return "\n".join(lines)


def _rate(rate: float | None, count: int | None, episodes: int) -> str:
    """``"46% (23/50)"``, or ``"not measured"`` for evaluations made before the placed metric existed."""
    return "not measured" if rate is None else f"{100 * rate:.0f}% ({count}/{episodes})"


def build_summary(
    cfg: PipelineConfig,
    *,
    instruction: str,
    eval_sft: dict[str, Any],
    eval_rl: dict[str, Any],
    demos: Any,
    demos_path: Path,
    history: list[dict[str, Any]] | None,
    timings: dict[str, float],
    video: dict[str, Any] | None,
) -> dict[str, Any]:
    """The content of a main job's ``summary.json``."""
    before, after = eval_sft["summary"]["success_rate"], eval_rl["summary"]["success_rate"]
    e = cfg.eval
    return {
        "task": cfg.task,
        "instruction": instruction,
        "policy": cfg.policy,
        "method": cfg.method,
        "seed": cfg.seed,
        "alphas": list(cfg.alphas),
        "success_rate": {"sft": before, cfg.method: after},
        "improvement_points": 100 * (after - before),
        "placed_rate": {"sft": eval_sft["summary"].get("placed_rate"), cfg.method: eval_rl["summary"].get("placed_rate")},
        "eval": {"sft": eval_sft["summary"], cfg.method: eval_rl["summary"]},
        "eval_protocol": {
            "states": list(e.states),
            "max_steps": e.max_steps,
            "warmup_steps": WARMUP_STEPS,
            "temperature": e.temperature,
            "decoding": "greedy (argmax token)" if e.temperature == 0 else "sampled",
        },
        "demos": {"path": str(demos_path), "episodes": demos.num_episodes, "steps": demos.num_steps,
                  **{k: demos.meta.get(k) for k in ("seed", "noise", "expert_version", "format_version")}},
        "train": {"iterations": cfg.rl.iterations, "num_envs": cfg.num_envs, "max_steps": cfg.rl.max_steps,
                  "env_steps": (history[-1].get("charts/env_steps") if history else None)},
        "timings_s": timings,
        "video": video,
        "config": cfg.to_dict(),
        "command": command_line(cfg),
        "versions": versions(),
        "machine": machine(),
        "date": now(),
    }


def config_from_summary(summary: dict[str, Any]) -> PipelineConfig:
    """The config of a run from its ``summary.json`` (``config`` as written by :meth:`PipelineConfig.to_dict`)."""
    raw = summary["config"]
    base = PipelineConfig(extra=raw.get("extra") or {})
    options = {k: v for k, v in raw.items() if k in OPTIONS[PipelineConfig] and k not in SECTIONS}
    for section in SECTIONS:
        accepted = OPTIONS[type(getattr(base, section))]
        options[section] = {k: v for k, v in raw[section].items() if k in accepted}
    return from_options(options, base, source="summary.json")


def table_and_verdict(cfg: PipelineConfig, summary: dict[str, Any]) -> tuple[str, str]:
    """The before/after table and the one-line verdict of a run, from its summary."""
    name = METHOD_LABELS[cfg.method]
    ev = summary["eval"]
    table = before_after_table([("SFT", {"summary": ev["sft"]}), (name, {"summary": ev[cfg.method]})], cfg.task)
    before, after = summary["success_rate"]["sft"], summary["success_rate"][cfg.method]
    verdict = (
        f"{name} changed LIBERO's success rate by {100 * (after - before):+.0f} points "
        f"({100 * before:.0f}% -> {100 * after:.0f}%)"
    )
    placed = summary.get("placed_rate") or {}
    p_before, p_after = placed.get("sft"), placed.get(cfg.method)
    if p_before is not None and p_after is not None:
        verdict += (
            f" and the placed rate by {100 * (p_after - p_before):+.0f} points "
            f"({100 * p_before:.0f}% -> {100 * p_after:.0f}%)"
        )
    verdict += f" on {len(cfg.eval.states)} benchmark states of Task{cfg.task}."
    return table, verdict


def timings_line(timings: dict[str, float]) -> str:
    """``timings: demos 16s, sft 20s, ...``."""
    return "timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())


def results_markdown(cfg: PipelineConfig, summary: dict[str, Any]) -> str:
    """``results.md`` of a run: the command, the table, the verdict, the protocol, timings and versions."""
    v = summary["versions"]
    m = summary["machine"]
    table, verdict = table_and_verdict(cfg, summary)
    video = summary.get("video") or {}
    video_line = (
        [f"Rollout video of the final policy (greedy, benchmark state {video.get('init_state')}, "
         f"{'LIBERO success' if video.get('success') else 'LIBERO failure'}"
         f"{'' if video.get('placed') is None else (', placed' if video['placed'] else ', not placed')} in "
         f"{video.get('length')} steps): "
         f"[{Path(video['path']).name}]({Path(video['path']).name})", ""]
        if video.get("path") else []
    )
    e, rl = cfg.eval, cfg.rl
    return "\n".join(
        [
            f"# SFT vs {METHOD_LABELS[cfg.method]} on LiberoObject-Task{cfg.task}, {cfg.policy} policy",
            "",
            f"Command: `{command_line(cfg)}` (task {cfg.task}, policy {cfg.policy}, seed {cfg.seed}, "
            f"alpha1={cfg.alphas[0]:g}, alpha2={cfg.alphas[1]:g}).",
            "",
            table,
            "",
            verdict,
            "",
            f"Evaluation: {len(e.states)} benchmark initial states, one episode each, at most "
            f"{e.max_steps} steps after {WARMUP_STEPS} warm-up steps, "
            + ("greedy decoding. " if e.temperature == 0 else f"sampling at temperature {e.temperature}. ")
            + "LIBERO success: LIBERO's predicate (comparable with published numbers). Placed: LIBERO success, "
            "then the gripper opened and the arm held still for 20 steps, after which the object is still in the "
            "basket, untouched, and the basket undisturbed. Training episodes end on placement, and the staged "
            "reward's top stage needs it.",
            f"SFT: {summary['demos']['episodes']} expert demonstrations ({summary['demos']['steps']} steps), "
            f"{cfg.sft.epochs} epochs, hidden {list(cfg.hidden)}. RL: {rl.iterations} iterations, groups of "
            f"M={cfg.num_envs}, <= {rl.max_steps} steps, lr {rl.lr}, temperature {rl.temperature}, "
            f"KL beta {rl.kl_beta}, {rl.update_schedule} updates.",
            "",
            timings_line(summary["timings_s"]),
            "",
            f"Machine: {m.get('cpu_model', '?')} ({m.get('cpu_count')} cores). Versions: "
            + ", ".join(f"{k} {val}" for k, val in v.items()),
            "",
            "![training curve](training_curve.png)",
            "",
            *video_line,
        ]
    )


def record_run(out_dir: str | os.PathLike, name: str = "main_job", say: Callable[[str], None] = _default_say) -> Path:
    """Copy a finished run's results to ``benchmarks/results/<name>.{json,md,png,mp4}``.

    Args:
        out_dir: the run's ``output_dir`` (it holds ``summary.json`` and ``training_curve.png``).
        name: base name of the files; letters, digits, ``_`` and ``-`` only.
        say: where the progress line goes.

    Raises:
        ValueError: on a bad name. FileNotFoundError: if the run has no ``summary.json``.
    """
    from libero_tgrpo.paths import results_dir

    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ValueError(f"record name {name!r} is not accepted: use letters, digits, '_' and '-' only.")
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise FileNotFoundError(f"{out / 'summary.json'} does not exist: run the job to the end first.")
    summary = json.loads((out / "summary.json").read_text())
    cfg = config_from_summary(summary)
    rdir = results_dir()
    write_json(rdir / f"{name}.json", summary)
    md = results_markdown(cfg, summary).replace("(training_curve.png)", f"({name}.png)")
    if (out / "training_curve.png").is_file():
        shutil.copyfile(out / "training_curve.png", rdir / f"{name}.png")
    video = summary.get("video") or {}
    if video.get("path") and Path(video["path"]).is_file():
        shutil.copyfile(video["path"], rdir / f"{name}.mp4")
        md = md.replace(Path(video["path"]).name, f"{name}.mp4")
    write_text(rdir / f"{name}.md", md)
    say(f"recorded to {rdir / (name + '.md')}")
    return rdir / f"{name}.md"
