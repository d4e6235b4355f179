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
(:mod:`libero_tgrpo.options`); a bad value stops the command before any work. The async vector envs start
their workers with forkserver; this module's entry point is the console script (or ``python -m
libero_tgrpo``), which is import-safe.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.options import OptionError, load_config, registry
from libero_tgrpo.parsing import parse_states, parse_task
from tgrpo.config import ConfigError

__all__ = ["main", "parse", "parse_states", "parse_task", "COMMANDS"]

_Options = Annotated[PipelineConfig, tyro.conf.OmitArgPrefixes, tyro.conf.arg(name="")]
_COMMON = frozenset({"task", "seed", "output_dir", "progress"})


@dataclass
class RunCommand:
    """The main job: demonstrations -> SFT -> evaluation -> TGRPO -> evaluation, then the before/after table,
    the training curve and a rollout video under --output-dir. Defaults: Task4, the built-in state policy, seed 0,
    outputs/main; about 8-15 minutes on 2 CPU cores."""

    options: _Options
    config: str | None = None
    """YAML file of options (e.g. a run's config.yaml); flags given with it override it."""
    record: str | None = None
    """Also write benchmarks/results/NAME.{json,md,png} (--record alone: main_job)."""
    debug: bool = False
    """Show the full traceback of an error (by default one line)."""


@dataclass
class DemosCommand:
    """Run the scripted expert on training placements (never the benchmark states) until --num-demos episodes
    succeed, and write them as .npz (format-versioned). Sets are cached by (task, n, seed, noise, observation
    mode, expert version)."""

    options: _Options
    config: str | None = None
    """YAML file of options (e.g. a run's config.yaml); flags given with it override it."""
    obs_mode: Literal["state", "rgb", "rgb_state"] = "state"
    """Observations to store (the vision policy needs rgb_state)."""
    out: str | None = None
    """Also copy the set to this .npz file."""
    lerobot: str | None = None
    """Also export the set as a LeRobotDataset (v3.0) to this new directory (needs the 'lerobot' extra)."""
    debug: bool = False
    """Show the full traceback of an error (by default one line)."""


@dataclass
class SftCommand:
    """Supervised fine-tuning: cross-entropy of the expert's action tokens. Writes OUTPUT_DIR/policy.pt and
    sft_metrics.jsonl."""

    options: _Options
    config: str | None = None
    """YAML file of options (e.g. a run's config.yaml); flags given with it override it."""
    debug: bool = False
    """Show the full traceback of an error (by default one line)."""


@dataclass
class TrainCommand:
    """Reinforcement learning on training placements of the task with the staged reward. Writes metrics.jsonl,
    checkpoint.pt, training_curve.png and policy.pt under --output-dir."""

    options: _Options
    config: str | None = None
    """YAML file of options (e.g. a run's config.yaml); flags given with it override it."""
    init: str | None = None
    """Policy file to start from (e.g. outputs/sft/policy.pt); None: a fresh --policy."""
    debug: bool = False
    """Show the full traceback of an error (by default one line)."""


@dataclass
class EvalCommand:
    """One episode per benchmark state (default all 50), at most 280 steps after 10 warm-up steps, greedy
    decoding. Writes OUTPUT_DIR/eval.json (success, lengths, versions, seeds)."""

    policy_file: tyro.conf.Positional[str]
    """policy.pt of `sft`/`train`, or a TGRPO run directory."""
    options: _Options
    config: str | None = None
    """YAML file of options (e.g. a run's config.yaml); flags given with it override it."""
    video: str | None = None
    """Also write a rollout video (.mp4) of the first state."""
    debug: bool = False
    """Show the full traceback of an error (by default one line)."""


@dataclass(frozen=True)
class Command:
    """A subcommand: its arguments' class, the pipeline options it offers, its default output directory."""

    args: type
    options: frozenset[str] | None
    output_dir: str
    help: str


COMMANDS: dict[str, Command] = {
    "run": Command(RunCommand, None, "outputs/main",
                   "the main job: demos, SFT, eval, TGRPO, eval, table, plot, video"),
    "demos": Command(DemosCommand, _COMMON | {"demos"}, "outputs/demos",
                     "generate (or reuse) scripted-expert demonstrations"),
    "sft": Command(SftCommand, _COMMON | {"policy", "hidden", "demos", "sft", "hf", "overwrite"}, "outputs/sft",
                   "behaviour cloning of a token-action policy on demonstrations"),
    "train": Command(TrainCommand, _COMMON | {"policy", "hidden", "resume", "resume_or_start", "overwrite",
                                              "method", "alpha1", "alpha2",
                                              "normalize_alphas", "num_envs", "shared_placement", "rl", "ppo",
                                              "vectorization", "ray_address", "hf", "video_interval", "video_state",
                                              "snapshot_interval"},
                     "outputs/train", "TGRPO (or step-only, trajectory-only, PPO) from a policy file"),
    "eval": Command(EvalCommand, _COMMON | {"eval", "vectorization", "ray_address", "overwrite"}, "outputs/eval",
                    "success rate on the benchmark states"),
}
"""The subcommands of ``libero-tgrpo``."""

_DESCRIPTION = "Expert demonstrations -> SFT -> TGRPO -> evaluation on LIBERO-Object (TGRPO, arXiv 2506.08440)."


def _top_help() -> str:
    lines = ["usage: libero-tgrpo [-h] COMMAND [OPTIONS]", "", _DESCRIPTION, "", "commands:"]
    lines += [f"  {name:<7} {c.help}" for name, c in COMMANDS.items()]
    lines += ["", "Run `libero-tgrpo COMMAND --help` for its options, `libero-tgrpo run` for the main job on its "
              "built-in default (Task4, state policy, seed 0). Every command reads `--config FILE.yaml`."]
    return "\n".join(lines)


def _option_value(argv: list[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag VALUE`` or ``--flag=VALUE``), the last one given."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _record_default(argv: list[str]) -> list[str]:
    """``--record`` without a name means ``--record main_job``."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--record" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "main_job")
    return out


def _fail(command: str, message: str) -> None:
    print(f"libero-tgrpo {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse(argv: list[str] | None = None) -> tuple[str, Any]:
    """Parse a ``libero-tgrpo`` command line into ``(command, arguments)``; ``arguments.options`` is the
    :class:`PipelineConfig`, checked. Prints help or an error and raises ``SystemExit`` (0 or 2) otherwise."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_help())
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        _fail(name, f"unknown command {name!r}: accepted are {', '.join(COMMANDS)}.")
    command = COMMANDS[name]
    if name == "run":
        rest = _record_default(rest)
    base = PipelineConfig(output_dir=command.output_dir)
    config_file = _option_value(rest, "--config")
    if config_file and not {"-h", "--help"} & set(rest):
        try:
            base = load_config(config_file, base)
        except ConfigError as e:
            _fail(name, str(e))
    default = command.args(options=base, **({"policy_file": tyro.MISSING} if name == "eval" else {}))
    try:
        with _short_parse_errors():
            args = tyro.cli(command.args, args=rest, prog=f"libero-tgrpo {name}", default=default,
                            registry=registry(command.options), config=(tyro.conf.FlagCreatePairsOff,))
    except OptionError as e:
        _fail(name, f"{e} (see libero-tgrpo {name} --help)")
    return name, args


def _short_parse_errors() -> Any:
    """A context in which tyro's parse errors raise :class:`OptionError` with a one-line message instead of
    printing tyro's boxed report.

    tyro 1.0 offers this through its parse-error hook (``tyro._errors.on_parse_error``, experimental); without
    it, tyro's own report is printed (and it still exits with code 2).
    """
    import contextlib

    errors = getattr(tyro, "_errors", None)
    if errors is None or not hasattr(errors, "on_parse_error"):
        return contextlib.nullcontext()

    def flag(event: Any) -> str:
        arg = getattr(event, "argument", None)
        names = getattr(getattr(arg, "lowered", None), "name_or_flags", None) or []
        return "/".join(str(n) for n in names) or "an argument"

    def hook(event: Any) -> None:
        kind = type(event).__name__
        if kind == "InstantiationFailure":
            message = " ".join(str(event.message).split())
            if "Got errors:" in message:  # keep the reason, drop tyro's list of tried types
                head, reasons = message.split("Got errors:", 1)
                tried = [r.split(":", 1)[-1].strip() for r in reasons.split(" - ") if r.strip()]
                m = re.match(r"no type matching (.+) could be instantiated from \[(.*)\]", head.strip())
                head = f"invalid value {m.group(2)} (accepted: {m.group(1)})" if m else head.strip().rstrip(".")
                message = head + (f": {tried[-1]}" if tried else "")
            raise OptionError(f"argument {flag(event)}: {message}")
        if kind == "InvalidChoice":
            raise OptionError(f"argument {flag(event)}: invalid choice {event.value!r}; accepted are "
                              f"{', '.join(event.choices)}")
        if kind == "BadValue":
            got = f" {event.offending_value!r}" if event.offending_value is not None else ""
            raise OptionError(f"argument {flag(event)}: bad or missing value{got}")
        if kind == "UnrecognizedArgs":
            raise OptionError(f"unrecognized arguments: {' '.join(map(str, event.tokens))}")
        if kind == "MissingArgs":
            missing = [a.arg.lowered.name_or_flags[-1] for a in event.missing_arguments]
            raise OptionError(f"missing required arguments: {', '.join(missing)}")
        raise OptionError(f"bad command line ({kind})")

    return errors.on_parse_error(hook)


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
        run.check_digest("demos", demos_path)
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
