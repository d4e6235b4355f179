"""The ``libero-tgrpo`` command line: its subcommands, the options each offers, and how a command line is parsed.

Each subcommand is a dataclass of its own arguments (:class:`RunCommand`, :class:`DemosCommand`,
:class:`SftCommand`, :class:`TrainCommand`, :class:`EvalCommand`) around the
:class:`~libero_tgrpo.config.PipelineConfig` options it offers (:data:`COMMANDS`); :func:`parse` turns a
command line into ``(command, arguments)`` with tyro, a ``--config FILE`` under the flags, and reports a bad
one in one line (exit code 2). What each command then does is in :mod:`libero_tgrpo.cli`.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import tyro

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.options import OptionError, load_config, registry
from tgrpo.config import ConfigError

__all__ = ["COMMANDS", "Command", "RunCommand", "DemosCommand", "SftCommand", "TrainCommand", "EvalCommand",
           "parse", "fail"]

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
                                              "snapshot_interval", "select", "select_placements",
                                              "select_points"},
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


def fail(command: str, message: str) -> None:
    """Report a usage error of ``libero-tgrpo COMMAND`` in one line on stderr and exit with code 2.

    Raises:
        SystemExit: always, with code 2.
    """
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
        fail(name, f"unknown command {name!r}: accepted are {', '.join(COMMANDS)}.")
    command = COMMANDS[name]
    if name == "run":
        rest = _record_default(rest)
    base = PipelineConfig(output_dir=command.output_dir)
    config_file = _option_value(rest, "--config")
    if config_file and not {"-h", "--help"} & set(rest):
        try:
            base = load_config(config_file, base)
        except ConfigError as e:
            fail(name, str(e))
    default = command.args(options=base, **({"policy_file": tyro.MISSING} if name == "eval" else {}))
    try:
        with _short_parse_errors():
            args = tyro.cli(command.args, args=rest, prog=f"libero-tgrpo {name}", default=default,
                            registry=registry(command.options), config=(tyro.conf.FlagCreatePairsOff,))
    except OptionError as e:
        fail(name, f"{e} (see libero-tgrpo {name} --help)")
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
