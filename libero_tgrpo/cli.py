"""``libero-tgrpo``: expert demonstrations -> SFT -> TGRPO -> evaluation on LIBERO-Object.

Subcommands:

* ``run``: the main job with its built-in default (Task4, the state policy, seed 0, ``outputs/main``):
  demonstrations, SFT, evaluation, TGRPO, evaluation, before/after table, training curve, rollout video.
* ``demos``: generate (or reuse) scripted-expert demonstrations on training placements.
* ``sft``: behaviour cloning of a token-action policy on demonstrations.
* ``train``: TGRPO (or step-only, trajectory-only, PPO) from an SFT policy.
* ``eval``: success rate on the 50 benchmark states (280 steps, greedy), optional video.

Every subcommand has ``--help`` and reads ``--config FILE`` (YAML, e.g. a run's ``config.yaml``; flags after
it override it). The options are those of :class:`libero_tgrpo.config.PipelineConfig`, parsed by tyro
(:mod:`libero_tgrpo.options`; the subcommands' arguments and the parsing are in :mod:`libero_tgrpo.cli_args`);
a bad value stops the command before any work. The async vector envs start their workers with forkserver;
this module's entry point is the console script (or ``python -m libero_tgrpo``), which is import-safe.

An output directory holds one run (:class:`libero_tgrpo.rundir.RunDir`): ``--resume`` continues it with the
same options, ``--resume-or-start`` resumes or starts, ``--overwrite`` replaces it; a second writer is
refused. The output directory is checked before any long work; an expected error is one line on stderr and
exit code 2 (``--debug``: with its traceback), an interrupt exit code 130.
"""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from libero_tgrpo.cli_args import (
    COMMANDS,
    Command,  # noqa: F401  (re-exported for code that imports it from here)
    DemosCommand,
    EvalCommand,
    RunCommand,
    SftCommand,
    TrainCommand,
    parse,
)
from libero_tgrpo.cli_args import fail as _fail
from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.options import OptionError
from libero_tgrpo.parsing import parse_states, parse_task

__all__ = ["main", "parse", "parse_states", "parse_task", "COMMANDS"]


# ---------------------------------------------------------------------------------------------- commands
def _open_run(name: str, cfg: PipelineConfig, inputs: tuple[str | None, ...] = (), **identity: Any) -> Any:
    """The subcommand's output directory, checked and claimed before any long work (:class:`RunDir`)."""
    from libero_tgrpo.rundir import RunDir, run_identity

    return RunDir(cfg.output_dir, resume=cfg.resume or cfg.resume_or_start, command=name,
                  identity=run_identity(cfg, COMMANDS[name].options, **identity), overwrite=cfg.overwrite,
                  start_if_missing=cfg.resume_or_start, inputs=[p for p in inputs if p])


def _cmd_run(args: RunCommand) -> int:
    from libero_tgrpo.files import check_writable
    from libero_tgrpo.paths import results_dir
    from libero_tgrpo.pipeline import run_main_job

    cfg = args.options
    if args.record:
        check_writable(results_dir(), "results directory")
    summary = run_main_job(cfg, record=args.record or False)
    print(f"results: {Path(cfg.output_dir) / 'results.md'}")
    return 0 if summary else 1


def _cmd_demos(args: DemosCommand) -> int:
    import shutil

    from libero_tgrpo.demos import get_demos
    from libero_tgrpo.files import check_writable
    from libero_tgrpo.progress import say

    cfg = args.options
    d = cfg.demos
    cache_dir = cfg.output_dir if d.demo_cache == PipelineConfig().demos.demo_cache else d.demo_cache
    check_writable(cache_dir, "demonstrations directory")
    if args.out:
        check_writable(Path(args.out).parent, "directory of --out")
    if args.lerobot and Path(args.lerobot).exists():
        _fail("demos", f"--lerobot {args.lerobot!r} exists: give a new directory for the LeRobotDataset.")
    demos, path, cached = get_demos(
        cfg.task,
        d.num_demos,
        seed=cfg.demo_seed,
        noise=d.demo_noise,
        obs_mode=args.obs_mode,
        cache_dir=cache_dir,
        workers=d.workers,
        terminate_on=d.until,
        close_steps=d.expert_close_steps,
        lift=d.expert_lift,
        progress=cfg.progress,
        log=say,
    )
    if args.out:
        shutil.copyfile(path, args.out)
        path = Path(args.out)
    if args.lerobot:
        from libero_tgrpo.demo_lerobot import export_lerobot

        print(f"LeRobotDataset: {export_lerobot(demos, args.lerobot)}")
    print(f"{path} ({'reused' if cached else 'generated'}: {demos.num_episodes} episodes, {demos.num_steps} steps)")
    return 0


def _cmd_sft(args: SftCommand) -> int:
    import torch

    from libero_tgrpo.stages import run_demos, run_sft

    torch.set_num_threads(1)
    cfg = args.options
    with _open_run("sft", cfg, inputs=(cfg.demos.demos_path, cfg.demos.demo_cache)) as run:
        demos, demos_path = run_demos(cfg)
        run.check_demos(demos, demos_path)
        _, _, path = run_sft(cfg, demos, run.root)
    print(path)
    return 0


def _cmd_train(args: TrainCommand) -> int:
    import torch

    from libero_tgrpo.policies import build_policy, load_policy
    from libero_tgrpo.stages import observation_space, run_train

    torch.set_num_threads(1)
    cfg = args.options
    with _open_run("train", cfg, inputs=(args.init,), init=args.init is not None) as run:
        cfg = dataclasses.replace(cfg, resume=run.resume, resume_or_start=False, overwrite=False)
        if args.init:
            run.check_digest("init", args.init)
            policy, spec, info = load_policy(args.init)
            kind = spec["kind"] if spec["kind"] in ("state", "vision") else spec.get("path", "hf")
            if info.get("task") not in (None, cfg.task):
                print(f"warning: {args.init} was trained on Task{info['task']}, training it on Task{cfg.task}",
                      file=sys.stderr)
            cfg = dataclasses.replace(cfg, policy=kind)
        else:
            space = observation_space(cfg.task, cfg.obs_mode) if cfg.policy in ("state", "vision") else None
            policy, spec = build_policy(cfg.policy, space, seed=cfg.seed, hidden=cfg.hidden, **cfg.policy_kwargs())
        result = run_train(cfg, policy, spec, run.root)
    print(Path(cfg.output_dir) / "policy.pt")
    return 0 if result.history is not None else 1


def _cmd_eval(args: EvalCommand) -> int:
    import torch

    from libero_tgrpo.evaluation import record_video
    from libero_tgrpo.files import check_writable, write_json
    from libero_tgrpo.policies import load_policy
    from libero_tgrpo.stages import eval_config_kwargs, run_eval

    torch.set_num_threads(1)
    cfg = args.options
    if args.video:
        check_writable(Path(args.video).parent, "directory of --video")
    with _open_run("eval", cfg, inputs=(args.policy_file,), policy_file=str(args.policy_file),
                   video=args.video) as run:
        policy, spec, info = load_policy(args.policy_file)
        obs_mode = info.get("obs_mode") or {"state": "state", "vision": "rgb_state"}.get(spec["kind"], "rgb")
        res = run_eval(policy, cfg.task, **{**eval_config_kwargs(cfg), "obs_mode": obs_mode})
        res["policy_file"] = str(args.policy_file)
        res["policy_info"] = {k: v for k, v in info.items() if k != "versions"}
        if args.video:
            e = cfg.eval
            res["video"] = record_video(policy, cfg.task, args.video, init_state=e.states[0], obs_mode=obs_mode,
                                        max_steps=e.max_steps, temperature=e.temperature, seed=cfg.seed)
        out = write_json(run.root / "eval.json", res)
    s = res["summary"]
    print(json.dumps({"success_rate": s["success_rate"], "placed_rate": s["placed_rate"], "episodes": s["episodes"],
                      "mean_length": round(s["mean_length"], 1), "file": str(out)}))
    return 0


_RUNNERS = {"run": _cmd_run, "demos": _cmd_demos, "sft": _cmd_sft, "train": _cmd_train, "eval": _cmd_eval}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can cause or meet (bad options and files, refused or locked directories, dead workers,
    full disks, a diverged run): reported in one line with exit code 2."""
    from concurrent.futures.process import BrokenProcessPool

    from libero_tgrpo.files import DirLockedError, RunDirError

    return (ValueError, OSError, RuntimeError, ArithmeticError, ImportError, OptionError, RunDirError,
            DirLockedError, BrokenProcessPool)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    text = re.sub(r"^\[Errno \d+\] ", "", text)
    return text or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``libero-tgrpo`` console script.

    Returns 0 on success and 130 after an interrupt (Ctrl-C, SIGTERM). An expected error (a bad option value or
    file, a refused or locked output directory, a failed worker, a full disk, ...) prints one line on stderr
    and raises ``SystemExit(2)`` (``--debug``: the traceback too); any other error ``SystemExit(1)``.
    """
    name, args = parse(argv)
    debug = bool(getattr(args, "debug", False))
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so that the env worker processes are closed on the way out.
        previous = signal.signal(signal.SIGTERM, _terminate)
    t0 = time.perf_counter()
    out = Path(args.options.output_dir)
    created = name != "demos" and not out.exists()
    try:
        if name != "demos":  # before the heavy imports: an unwritable output directory fails in a second
            from libero_tgrpo.files import check_writable

            check_writable(out)
        return _RUNNERS[name](args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        hint = "; run the same command with --resume to continue" if name in ("run", "train") else ""
        print(f"\ninterrupted after {time.perf_counter() - t0:.0f}s{hint}.", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the command line reports every error in one line
        if debug:
            traceback.print_exc()
        if created:
            _remove_if_unused(out)
        if isinstance(e, _expected_errors()) or type(e).__module__.startswith("ray."):  # Ray: a lost actor or node
            _fail(name, _one_line(e))
        print(f"libero-tgrpo {name}: internal error: {type(e).__name__}: {_one_line(e)}"
              + ("" if debug else " (run again with --debug for the traceback)"), file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _remove_if_unused(directory: Path) -> None:
    """Remove an output directory that this command made and that holds no result (it failed first)."""
    from libero_tgrpo.files import LOCK_NAME

    try:
        entries = list(directory.iterdir())
        if all(p.name in (LOCK_NAME, "run.json") and p.is_file() for p in entries):
            for p in entries:
                p.unlink()
            directory.rmdir()
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
