"""``libero-tgrpo``: expert demonstrations -> SFT -> TGRPO -> evaluation on LIBERO-Object.

Subcommands:

* ``run``: the main job with its built-in default (Task4, the state policy, seed 0, ``outputs/main``):
  demonstrations, SFT, evaluation, TGRPO, evaluation, before/after table, training curve, rollout video.
* ``demos``: generate (or reuse) scripted-expert demonstrations on training placements.
* ``sft``: behaviour cloning of a token-action policy on demonstrations.
* ``train``: TGRPO (or step-only, trajectory-only, PPO) from an SFT policy.
* ``eval``: success rate on the 50 benchmark states (280 steps, greedy), optional video.

Every subcommand has ``--help``. The async vector envs start their workers with forkserver; this module's
entry point is the console script (or ``python -m libero_tgrpo``), which is import-safe.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from libero_tgrpo.paper import PAPER_ALPHAS

__all__ = ["main", "build_parser", "parse_states", "parse_task"]


def _defaults() -> Any:
    from libero_tgrpo.pipeline import PipelineConfig

    return PipelineConfig()


def parse_task(value: str) -> int:
    """``--task``: 1-10, ``Task4``, ``LiberoObject-Task4-v0`` or the instruction text."""
    text = str(value).strip()
    for prefix in ("LiberoObject-", "liberoobject-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    if text.endswith("-v0"):
        text = text[:-3]
    if text.lower().startswith("task") and text[4:].isdigit():
        text = text[4:]
    if text.isdigit() and 1 <= int(text) <= 10:
        return int(text)
    raise argparse.ArgumentTypeError(
        f"unknown task {value!r}: accepted are 1-10, Task1-Task10 or LiberoObject-Task1-v0 ... "
        "LiberoObject-Task10-v0 (Task4 is the bbq sauce)."
    )


def parse_states(value: str) -> tuple[int, ...]:
    """``--states``: ``all``, ``0-49``, ``0,3,7`` or ``0-4,10``; each state in 0-49."""
    text = str(value).strip().lower()
    if text in ("all", ""):
        return tuple(range(50))
    out: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--states {value!r} is not accepted: give 'all', a range '0-49', or a list '0,3,7'."
        ) from None
    bad = [s for s in out if not 0 <= s <= 49]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"--states {value!r}: benchmark states are 0-49, got {bad or out}.")
    return tuple(out)


def _nonneg_float(name: str):
    def parse(value: str) -> float:
        try:
            v = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {value!r} is not a number; give a number >= 0.") from None
        if not v >= 0 or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} {value!r} is not accepted: it must be a finite number >= 0.")
        return v

    return parse


def _int_at_least(name: str, low: int, why: str = ""):
    def parse(value: str) -> int:
        try:
            v = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} {value!r} is not an integer.") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{name} {value!r} is not accepted: it must be >= {low}{why}.")
        return v

    return parse


def _hidden(value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden {value!r}: give widths like '256,256'.") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--hidden {value!r}: widths must be positive integers.")
    return out


def _alpha_help() -> str:
    pairs = ", ".join(f"T{t} {a1:g}/{a2:g}" for t, (a1, a2) in PAPER_ALPHAS.items())
    return pairs


# ---------------------------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, d: Any, output_default: str) -> None:
    p.add_argument("--task", type=parse_task, default=d.task,
                   help="LIBERO-Object task: 1-10, Task4 or LiberoObject-Task4-v0 (default: %(default)s, bbq sauce)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of everything the stage does (default: %(default)s)")
    p.add_argument("--output-dir", default=output_default, help="output directory (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-iteration lines")


def _add_demo_args(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("demonstrations")
    g.add_argument("--num-demos", type=_int_at_least("--num-demos", 1), default=d.num_demos,
                   help="successful expert episodes (default: %(default)s)")
    g.add_argument("--demo-seed", type=int, default=None, help="seed of the demonstration set (default: --seed)")
    g.add_argument("--demo-noise", type=_nonneg_float("--demo-noise"), default=d.demo_noise,
                   help="std of the expert's position-action noise (default: %(default)s)")
    g.add_argument("--demo-cache", default=d.demo_cache, help="cache directory of demonstrations (default: %(default)s)")
    g.add_argument("--workers", type=_int_at_least("--workers", 1), default=d.workers,
                   help="processes generating demonstrations (default: %(default)s)")


def _add_sft_args(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("SFT")
    g.add_argument("--policy", default=d.policy,
                   help="'state' (built-in MLP), 'vision' (cameras + instruction + state) or a Hugging Face model "
                        "directory / Hub id (default: %(default)s)")
    g.add_argument("--hidden", type=_hidden, default=d.hidden,
                   help="hidden widths of the state/vision policy (default: %(default)s)")
    g.add_argument("--sft-epochs", type=_int_at_least("--sft-epochs", 1), default=d.sft_epochs,
                   help="passes over the demonstrations (default: %(default)s)")
    g.add_argument("--sft-lr", type=float, default=d.sft_lr, help="SFT learning rate (default: %(default)s)")
    g.add_argument("--sft-batch-size", type=_int_at_least("--sft-batch-size", 1), default=d.sft_batch_size,
                   help="SFT minibatch size (default: %(default)s)")


def _add_train_args(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("reinforcement learning")
    g.add_argument("--method", choices=("tgrpo", "step_only", "traj_only", "ppo"), default=d.method,
                   help="TGRPO, its ablations (step_only: alpha2=0, traj_only: alpha1=0) or PPO (default: %(default)s)")
    g.add_argument("--alpha1", type=_nonneg_float("--alpha1"), default=None,
                   help="weight of the step advantage (default: the paper's per-task value: " + _alpha_help() + ")")
    g.add_argument("--alpha2", type=_nonneg_float("--alpha2"), default=None,
                   help="weight of the trajectory advantage (default: the paper's per-task value)")
    g.add_argument("--raw-alphas", action="store_true",
                   help="use alpha1 and alpha2 as given; by default the pair is divided by its sum, keeping its ratio")
    g.add_argument("--num-envs", type=_int_at_least("--num-envs", 2, " (a TGRPO group compares >= 2 envs)"),
                   default=d.num_envs, help="group size M, parallel envs (default: %(default)s)")
    g.add_argument("--iterations", type=_int_at_least("--iterations", 1), default=d.iterations,
                   help="RL iterations (groups) (default: %(default)s)")
    g.add_argument("--max-steps", type=_int_at_least("--max-steps", 1), default=d.max_steps,
                   help="step cap of a training trajectory (default: %(default)s)")
    g.add_argument("--lr", type=float, default=d.lr, help="RL learning rate (default: %(default)s)")
    g.add_argument("--temperature", type=float, default=d.temperature,
                   help="sampling temperature of training rollouts (default: %(default)s)")
    g.add_argument("--kl-beta", type=_nonneg_float("--kl-beta"), default=d.kl_beta,
                   help="KL penalty to the SFT policy (default: %(default)s)")
    g.add_argument("--update-schedule", choices=("per_step", "minibatch"), default=d.update_schedule,
                   help="per_step: the paper's Algorithm 1; minibatch: shuffled minibatches (default: %(default)s)")
    g.add_argument("--rl-epochs", type=_int_at_least("--rl-epochs", 1), default=d.rl_epochs,
                   help="passes over each group's data (default: %(default)s)")
    g.add_argument("--rollout-mode", choices=("paper", "independent"), default=d.rollout_mode,
                   help="paper: a group ends at its first success (default: %(default)s)")
    g.add_argument("--independent-placements", action="store_true",
                   help="each env of a group gets its own training placement (default: one shared placement)")
    g.add_argument("--resume", action="store_true",
                   help="continue a killed run from the results and checkpoint in --output-dir")


def _add_eval_args(p: argparse.ArgumentParser, d: Any) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--states", type=parse_states, default=d.eval_states,
                   help="benchmark states: 'all' (default), '0-9' or '0,3,7'")
    g.add_argument("--eval-envs", type=_int_at_least("--eval-envs", 1), default=d.eval_envs,
                   help="parallel evaluation envs (default: %(default)s)")
    g.add_argument("--eval-max-steps", type=_int_at_least("--eval-max-steps", 1), default=d.eval_max_steps,
                   help="step cap of an evaluation episode (default: %(default)s)")
    g.add_argument("--eval-temperature", type=_nonneg_float("--eval-temperature"), default=d.eval_temperature,
                   help="0: greedy decoding (default); > 0: sampling")


def build_parser() -> argparse.ArgumentParser:
    """The ``libero-tgrpo`` argument parser (one subparser per subcommand)."""
    d = _defaults()
    parser = argparse.ArgumentParser(
        prog="libero-tgrpo",
        description="Expert demonstrations -> SFT -> TGRPO -> evaluation on LIBERO-Object (TGRPO, arXiv 2506.08440).",
        epilog="Run `libero-tgrpo run` for the main job on its built-in default (Task4, state policy, seed 0).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "run",
        help="the main job: demos, SFT, eval, TGRPO, eval, table, plot, video",
        description="The main job: demonstrations -> SFT -> evaluation -> TGRPO -> evaluation, then the "
        "before/after table, the training curve and a rollout video under --output-dir. Defaults: Task4, the "
        "built-in state policy, seed 0, outputs/main; about 15 minutes on 2 CPU cores.",
    )
    _add_common(p, d, d.output_dir)
    _add_demo_args(p, d)
    _add_sft_args(p, d)
    _add_train_args(p, d)
    _add_eval_args(p, d)
    p.add_argument("--no-video", action="store_true", help="skip the rollout video")
    p.add_argument("--record", nargs="?", const="main_job", default=None, metavar="NAME",
                   help="also write benchmarks/results/NAME.{json,md,png} (NAME default: main_job)")

    p = sub.add_parser(
        "demos",
        help="generate (or reuse) scripted-expert demonstrations",
        description="Run the scripted expert on training placements (never the benchmark states) until "
        "--num-demos episodes succeed, and write them as .npz (format-versioned). Sets are cached by (task, n, "
        "seed, noise, observation mode, expert version).",
    )
    _add_common(p, d, d.demo_cache)
    _add_demo_args(p, d)
    p.add_argument("--obs-mode", choices=("state", "rgb", "rgb_state"), default="state",
                   help="observations to store (default: %(default)s; the vision policy needs rgb_state)")
    p.add_argument("--out", default=None, help="also copy the set to this .npz file")

    p = sub.add_parser(
        "sft",
        help="behaviour cloning of a token-action policy on demonstrations",
        description="Supervised fine-tuning: cross-entropy of the expert's action tokens. Writes "
        "OUTPUT_DIR/policy.pt and sft_metrics.jsonl.",
    )
    _add_common(p, d, "outputs/sft")
    _add_demo_args(p, d)
    _add_sft_args(p, d)
    p.add_argument("--demos", default=None, help="demonstrations .npz (default: the cached set of --num-demos etc.)")

    p = sub.add_parser(
        "train",
        help="TGRPO (or step-only, trajectory-only, PPO) from a policy file",
        description="Reinforcement learning on training placements of the task with the staged reward. "
        "Writes metrics.jsonl, checkpoint.pt, training_curve.png and policy.pt under --output-dir.",
    )
    _add_common(p, d, "outputs/train")
    p.add_argument("--init", default=None,
                   help="policy file to start from (e.g. outputs/sft/policy.pt); default: a fresh --policy")
    p.add_argument("--policy", default=d.policy, help="policy kind when --init is not given (default: %(default)s)")
    p.add_argument("--hidden", type=_hidden, default=d.hidden, help=argparse.SUPPRESS)
    _add_train_args(p, d)

    p = sub.add_parser(
        "eval",
        help="success rate on the benchmark states",
        description="One episode per benchmark state (default all 50), at most 280 steps after 10 warm-up "
        "steps, greedy decoding. Writes OUTPUT_DIR/eval.json (success, lengths, versions, seeds).",
    )
    _add_common(p, d, "outputs/eval")
    p.add_argument("policy_file", help="policy.pt of `sft`/`train`, or a TGRPO run directory")
    _add_eval_args(p, d)
    p.add_argument("--video", default=None, help="also write a rollout video (.mp4) of the first state")
    return parser


# ---------------------------------------------------------------------------------------------- commands
def _config(args: argparse.Namespace, **over: Any) -> Any:
    from libero_tgrpo.pipeline import PipelineConfig

    fields = PipelineConfig.__dataclass_fields__
    kw: dict[str, Any] = {}
    mapping = {"states": "eval_states", "independent_placements": None, "no_video": None, "quiet": None,
               "demos": "demos_path", "raw_alphas": None}
    for k, v in vars(args).items():
        name = mapping.get(k, k)
        if name in fields:
            kw[name] = v
    if getattr(args, "independent_placements", False):
        kw["shared_placement"] = False
    if getattr(args, "no_video", False):
        kw["video"] = False
    if getattr(args, "raw_alphas", False):
        kw["normalize_alphas"] = False
    kw["progress"] = not getattr(args, "quiet", False)
    kw.update(over)
    return PipelineConfig(**kw)


def _cmd_run(args: argparse.Namespace) -> int:
    from libero_tgrpo.pipeline import run_main_job

    cfg = _config(args)
    summary = run_main_job(cfg, record=args.record or False)
    print(f"results: {Path(cfg.output_dir) / 'results.md'}")
    return 0 if summary else 1


def _cmd_demos(args: argparse.Namespace) -> int:
    import shutil

    from libero_tgrpo.demos import get_demos
    from libero_tgrpo.pipeline import _say

    demos, path, cached = get_demos(
        args.task,
        args.num_demos,
        seed=args.seed if args.demo_seed is None else args.demo_seed,
        noise=args.demo_noise,
        obs_mode=args.obs_mode,
        cache_dir=args.output_dir if args.demo_cache == _defaults().demo_cache else args.demo_cache,
        workers=args.workers,
        progress=not args.quiet,
        log=_say,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.out)
        path = Path(args.out)
    print(f"{path} ({'reused' if cached else 'generated'}: {demos.num_episodes} episodes, {demos.num_steps} steps)")
    return 0


def _cmd_sft(args: argparse.Namespace) -> int:
    import torch

    from libero_tgrpo.pipeline import run_demos, run_sft

    torch.set_num_threads(1)
    cfg = _config(args)
    demos, _ = run_demos(cfg)
    _, _, path = run_sft(cfg, demos, Path(args.output_dir))
    print(path)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from libero_tgrpo.pipeline import _single_observation_space, run_train
    from libero_tgrpo.policies import build_policy, load_policy, obs_mode_for

    torch.set_num_threads(1)
    if args.init:
        policy, spec, info = load_policy(args.init)
        kind = spec["kind"] if spec["kind"] in ("state", "vision") else spec.get("path", "hf")
        if info.get("task") not in (None, args.task):
            print(f"warning: {args.init} was trained on Task{info['task']}, training it on Task{args.task}",
                  file=sys.stderr)
        cfg = _config(args, policy=kind)
    else:
        cfg = _config(args)
        space = _single_observation_space(f"LiberoObject-Task{cfg.task}-v0", obs_mode_for(cfg.policy))
        policy, spec = build_policy(cfg.policy, space, seed=cfg.seed, hidden=cfg.hidden)
    result = run_train(cfg, policy, spec, Path(cfg.output_dir))
    print(Path(cfg.output_dir) / "policy.pt")
    return 0 if result.history is not None else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from libero_tgrpo.evaluation import record_video
    from libero_tgrpo.pipeline import _write_json, run_eval
    from libero_tgrpo.policies import load_policy

    torch.set_num_threads(1)
    policy, spec, info = load_policy(args.policy_file)
    obs_mode = info.get("obs_mode") or {"state": "state", "vision": "rgb_state"}.get(spec["kind"], "rgb")
    res = run_eval(policy, args.task, obs_mode=obs_mode, states=args.states, num_envs=args.eval_envs,
                   max_steps=args.eval_max_steps, temperature=args.eval_temperature, seed=args.seed,
                   progress=not args.quiet)
    res["policy_file"] = str(args.policy_file)
    res["policy_info"] = {k: v for k, v in info.items() if k != "versions"}
    if args.video:
        res["video"] = record_video(policy, args.task, args.video, init_state=args.states[0], obs_mode=obs_mode,
                                    max_steps=args.eval_max_steps, temperature=args.eval_temperature, seed=args.seed)
    out = _write_json(Path(args.output_dir) / "eval.json", res)
    s = res["summary"]
    print(json.dumps({"success_rate": s["success_rate"], "placed_rate": s["placed_rate"], "episodes": s["episodes"],
                      "mean_length": round(s["mean_length"], 1), "file": str(out)}))
    return 0


_COMMANDS = {"run": _cmd_run, "demos": _cmd_demos, "sft": _cmd_sft, "train": _cmd_train, "eval": _cmd_eval}


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``libero-tgrpo`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so that the env worker processes are closed on the way out.
        previous = signal.signal(signal.SIGTERM, _terminate)
    t0 = time.perf_counter()
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"libero-tgrpo {args.command}: error: {e}\n")
    except KeyboardInterrupt:
        print(
            f"\ninterrupted after {time.perf_counter() - t0:.0f}s; run the same command with --resume to continue.",
            file=sys.stderr,
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
