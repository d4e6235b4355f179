"""The main job: demonstrations -> SFT -> evaluation -> TGRPO -> evaluation -> table, plot and video.

:func:`run_main_job` chains the stages of :mod:`libero_tgrpo.stages` with the options of a
:class:`~libero_tgrpo.config.PipelineConfig` (its defaults are the built-in main job), times each stage and
writes everything under one output directory (:class:`~libero_tgrpo.rundir.RunDir`). With ``resume=True`` the
stages whose results are already on disk are skipped and TGRPO continues from its last checkpoint, so a killed
run is continued by running the same command again with ``--resume``. The report is
:mod:`libero_tgrpo.reports`'s.

The names of the stage, config and report modules are re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from libero_gym import get_task
from libero_tgrpo.config import METHOD_LABELS, METHODS, PipelineConfig, method_alphas
from libero_tgrpo.evaluation import record_video
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.options import command_line
from libero_tgrpo.paper import PAPER_TABLE1
from libero_tgrpo.plots import plot_main_job
from libero_tgrpo.policies import load_policy
from libero_tgrpo.progress import say as _default_say
from libero_tgrpo.reports import (
    before_after_table,
    build_summary,
    record_run,
    results_markdown,
    table_and_verdict,
    timings_line,
)
from libero_tgrpo.rundir import RunDir, run_identity
from libero_tgrpo.stages import SharedEvalEnvs, eval_config_kwargs, run_demos, run_eval, run_sft, run_train

__all__ = [
    "METHODS",
    "PipelineConfig",
    "method_alphas",
    "command_line",
    "record_run",
    "run_demos",
    "run_sft",
    "run_train",
    "run_eval",
    "run_main_job",
    "before_after_table",
]


def run_main_job(
    cfg: PipelineConfig, record: bool | str = False, say: Callable[[str], None] = _default_say
) -> dict[str, Any]:
    """Demonstrations -> SFT -> evaluation -> TGRPO -> evaluation; prints and writes the before/after table.

    Writes under ``cfg.output_dir``: ``config.json``, ``config.yaml`` and ``command.txt`` (the resolved config
    and the command that reproduces the run), ``sft/`` (policy, SFT metrics), ``eval_sft.json``, ``tgrpo/``
    (metrics.jsonl, checkpoint, policy, training_curve.png), ``eval_tgrpo.json``, ``training_curve.png``
    (training curve and the before/after success), ``rollout_tgrpo.mp4``, ``results.md`` and ``summary.json``
    (versions, seeds, timings). With ``record=True`` also ``benchmarks/results/main_job.{json,md,png}`` (a
    string: that name instead of ``main_job``; see :func:`~libero_tgrpo.reports.record_run`).

    Returns:
        The summary dict.
    """
    import torch

    torch.set_num_threads(1)
    with RunDir(cfg.output_dir, resume=cfg.resume or cfg.resume_or_start, say=say, command="run",
                identity=run_identity(cfg), overwrite=cfg.overwrite,
                start_if_missing=cfg.resume_or_start,
                inputs=[p for p in (cfg.demos.demos_path, cfg.demos.demo_cache) if p]) as run:
        return _main_job(cfg, run, record, say)


def _main_job(cfg: PipelineConfig, run: RunDir, record: bool | str, say: Callable[[str], None]) -> dict[str, Any]:
    # the run's own config (recorded, and the command that gives it); the work resumes as the run directory says
    recorded = dataclasses.replace(cfg, resume=False, resume_or_start=False, overwrite=False)
    cfg = dataclasses.replace(recorded, resume=run.resume)
    run.write_config(recorded)
    task = get_task(cfg.task)
    say(f"main job: Task{task.task_id} ({task.instruction!r}), policy {cfg.policy}, seed {cfg.seed}, "
        f"output {run.root}{' (resuming)' if run.resume else ''}")

    demos, demos_path = run.stage("demos", lambda: run_demos(cfg, say))
    run.check_demos(demos, demos_path)
    sft_file = run.root / "sft" / "policy.pt"
    policy, spec = run.stage("sft", lambda: run_sft(cfg, demos, sft_file.parent, say)[:2], done=["sft/policy.pt"],
                             load=lambda: load_policy(sft_file)[:2])
    run.check_digest("sft", sft_file)
    eval_kw = dict(eval_config_kwargs(cfg), say=say)
    with SharedEvalEnvs(cfg) as eval_envs:

        def evaluation(name: str, pol: Any) -> dict[str, Any]:
            return {**run_eval(pol, cfg.task, envs=eval_envs.get(), **eval_kw), "policy": name}

        eval_sft = run.json_stage("eval_sft", "eval_sft.json", lambda: evaluation("sft", policy))
        eval_envs.close()  # free the cores for the training group
        result = run.stage("tgrpo", lambda: run_train(cfg, policy, spec, run.root / cfg.method, say))
        policy = result.policy
        selection = getattr(result, "selection", None)
        eval_rl = run.json_stage("eval_tgrpo", f"eval_{cfg.method}.json", lambda: {
            **evaluation(cfg.method, policy), **({"selection": selection} if selection else {})})

    _plot(cfg, result.history, eval_sft, eval_rl, run, say)
    video = _video(cfg, policy, eval_rl, run, say) if cfg.video else None
    run.timings["total"] = run.elapsed()

    summary = build_summary(recorded, instruction=task.instruction, eval_sft=eval_sft, eval_rl=eval_rl, demos=demos,
                            demos_path=demos_path, history=result.history, timings=run.timings, video=video)
    write_json(run.root / "summary.json", summary)
    write_text(run.root / "results.md", results_markdown(recorded, summary))
    table, verdict = table_and_verdict(recorded, summary)
    print("\n" + table + "\n\n" + verdict + "\n" + timings_line(run.timings), flush=True)
    if record:
        record_run(run.root, "main_job" if record is True else str(record), say=say)
    return summary


def _plot(cfg: PipelineConfig, history: Any, eval_sft: dict[str, Any], eval_rl: dict[str, Any], run: RunDir,
          say: Callable[[str], None]) -> None:
    """The training curve and the before/after success of the run."""
    name = METHOD_LABELS[cfg.method]
    paper_key = cfg.method if cfg.method in PAPER_TABLE1 else None
    if history and plot_main_job(
        history,
        [("SFT", eval_sft["summary"]["success_rate"], eval_sft["summary"].get("placed_rate"),
          PAPER_TABLE1["sft"][cfg.task]),
         (name, eval_rl["summary"]["success_rate"], eval_rl["summary"].get("placed_rate"),
          PAPER_TABLE1[paper_key][cfg.task] if paper_key else None)],
        run.root / "training_curve.png",
        title=f"LiberoObject-Task{cfg.task}, {cfg.policy} policy, seed {cfg.seed}: SFT then {name}",
    ):
        say(f"training curve: {run.root / 'training_curve.png'}")


def _video(cfg: PipelineConfig, policy: Any, eval_rl: dict[str, Any], run: RunDir,
           say: Callable[[str], None]) -> dict[str, Any]:
    """A greedy rollout video of the final policy, from ``video_state`` or the first state it solved."""
    vpath = run.root / f"rollout_{cfg.method}.mp4"
    state = cfg.video_state
    if state is None:  # the first benchmark state the final policy solved, else the first state
        solved = [e["init_state"] for e in eval_rl["episodes"] if e["success"]]
        state = solved[0] if solved else cfg.eval.states[0]

    def make() -> dict[str, Any]:
        return record_video(policy, cfg.task, vpath, init_state=state, obs_mode=cfg.obs_mode,
                            max_steps=cfg.eval.max_steps, temperature=cfg.eval.temperature, seed=cfg.seed)

    video = run.stage("video", make, done=[vpath.name, "video.json"],
                      load=lambda: json.loads((run.root / "video.json").read_text()),
                      save=lambda v: write_json(run.root / "video.json", v))
    say(f"video: {vpath} (benchmark state {video['init_state']}, LIBERO success={video['success']}, "
        f"placed={video.get('placed')}, {video['length']} steps)")
    return video
