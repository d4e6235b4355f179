"""Does a policy let go by itself? Sampled rollouts on training placements, as TGRPO's groups see them.

Training and evaluation do not ask the same thing of a policy at the end of an episode. An evaluation episode
ends at LIBERO's success and the env's release check then opens the gripper for the policy ("placed"). A
training episode ends only on ``is_placed`` (the object in the undisturbed basket *and* let go), and the staged
reward's top stage needs it, so a policy that never opens its gripper scores 0% training success while its
evaluation reads 100%. This measures both on seeded training placements (never the benchmark states) by
sampling at the training temperature in the training env (``libero_tgrpo.envs.make_train_envs``, episodes
ending on ``is_placed``)::

    python -m benchmarks.self_release --task 2 --policy outputs/paper_table/runs/task2_seed0_paper/sft/policy.pt

Each run adds its rows to ``benchmarks/results/self_release/self_release.json`` (one row per policy file and
setting; a rerun replaces its row) and rewrites the table in ``self_release.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.files import write_json, write_text
from libero_tgrpo.selection import HELDOUT_PLACEMENT_OFFSET

RESULTS = Path(__file__).resolve().parent / "results" / "self_release"
_TRAIN = PipelineConfig().rl
MAX_STEPS = _TRAIN.max_steps
"""Steps of a training episode (the main job's ``rl.max_steps``)."""
TEMPERATURE = _TRAIN.temperature
"""Sampling temperature of training rollouts (the main job's ``rl.temperature``)."""


def check_args(placements: int, temperature: float, max_steps: int) -> None:
    """Refuse settings that cannot measure anything, before an env starts."""
    if placements < 1:
        raise ValueError(f"placements={placements!r} is not accepted: give 1 or more.")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} is not accepted: sampling needs a temperature > 0 "
                         f"(training samples at {TEMPERATURE:g}).")
    if max_steps < 1:
        raise ValueError(f"max_steps={max_steps!r} is not accepted: give 1 or more.")


def measure(policy: Any, task: int, *, placements: int = 12, temperature: float = TEMPERATURE,
            max_steps: int = MAX_STEPS, seed: int = 0) -> dict[str, Any]:
    """Sample one episode per training placement (seeds ``HELDOUT_PLACEMENT_OFFSET + j``) in a training env.

    Returns:
        ``episodes`` (``placement_seed``, ``libero_success``: LIBERO's predicate held at some step,
        ``released``: the episode ended on ``is_placed``, ``length``) and their rates.
    """
    import torch

    from libero_tgrpo.envs import make_train_envs
    from libero_tgrpo.evaluation import read_instructions

    check_args(placements, temperature, max_steps)
    torch.manual_seed(seed)
    envs = make_train_envs(task, 1, shared_placement=False, max_episode_steps=max_steps)
    episodes = []
    try:
        for j in range(placements):
            placement = HELDOUT_PLACEMENT_OFFSET + j
            obs, info = envs.reset(seed=seed + j, options={"placement_seed": placement})
            instr = read_instructions(envs, info)
            success, released, length = False, False, 0
            while True:
                with torch.no_grad():
                    tokens, _ = policy.sample(obs, instr, temperature)
                actions = np.asarray(policy.tokens_to_actions(tokens), dtype=np.float32)
                obs, _, terminated, truncated, info = envs.step(actions)
                instr = read_instructions(envs, info, previous=instr)
                length += 1
                success |= bool(np.asarray(info.get("is_success", [False]))[0])
                if terminated[0] or truncated[0]:
                    released = bool(terminated[0]) and bool(np.asarray(info.get("is_placed", [False]))[0])
                    break
            episodes.append({"placement_seed": placement, "libero_success": success, "released": released,
                             "length": length})
    finally:
        envs.close()
    n = len(episodes)
    return {"task": int(task), "placements": n, "temperature": float(temperature), "max_steps": int(max_steps),
            "seed": int(seed), "libero_success_rate": sum(e["libero_success"] for e in episodes) / n,
            "released_rate": sum(e["released"] for e in episodes) / n,
            "mean_length": float(np.mean([e["length"] for e in episodes])), "episodes": episodes}


def _table(rows: list[dict[str, Any]]) -> str:
    lines = ["# Does the policy let go by itself?", "",
             "Sampled rollouts in the training env on seeded training placements (never the benchmark states). "
             "*LIBERO success*: LIBERO's predicate held at some step. *Released*: the episode ended on "
             "`is_placed` (object in the undisturbed basket and let go), what training counts as success. "
             "Command: `python -m benchmarks.self_release --task T --policy PATH`.", "",
             "| task | policy | placements | temperature | LIBERO success % | released % | mean length |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["task"], r["policy"])):
        lines.append(f"| T{r['task']} | `{r['policy']}` | {r['placements']} | {r['temperature']:g} | "
                     f"{100 * r['libero_success_rate']:.0f} | {100 * r['released_rate']:.0f} | "
                     f"{r['mean_length']:.0f} |")
    return "\n".join(lines) + "\n"


def record(rows: list[dict[str, Any]], results_dir: Path) -> Path:
    """Merge ``rows`` into the results (a row per policy, task, placements, temperature) and rewrite the table."""
    path = results_dir / "self_release.json"
    old = json.loads(path.read_text()) if path.is_file() else []

    def key(r: dict[str, Any]) -> tuple:
        return r["policy"], r["task"], r["placements"], r["temperature"], r["max_steps"]

    merged = {key(r): r for r in old}
    merged.update({key(r): r for r in rows})
    write_json(path, list(merged.values()))
    write_text(results_dir / "self_release.md", _table(list(merged.values())))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.self_release", description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, required=True, help="task 1-10")
    ap.add_argument("--policy", action="append", required=True, help="a policy.pt (repeat for more)")
    ap.add_argument("--placements", type=int, default=12, help="training placements (default: %(default)s)")
    ap.add_argument("--temperature", type=float, default=TEMPERATURE, help="sampling temperature (default: %(default)s)")
    ap.add_argument("--max-steps", type=int, default=MAX_STEPS, help="episode steps (default: %(default)s)")
    ap.add_argument("--results-dir", default=str(RESULTS), help="where to write (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        check_args(args.placements, args.temperature, args.max_steps)
    except ValueError as e:
        ap.error(str(e))
    missing = [p for p in args.policy if not Path(p).is_file()]
    if missing:
        ap.error(f"policy file(s) not found: {', '.join(missing)}")
    from libero_tgrpo.policies import load_policy
    from libero_tgrpo.versions import versions

    rows = []
    for p in args.policy:
        policy, _, _ = load_policy(p)
        res = measure(policy, args.task, placements=args.placements, temperature=args.temperature,
                      max_steps=args.max_steps)
        rows.append({"policy": p, **res, "versions": versions()})
        print(f"T{args.task} {p}: LIBERO success {100 * res['libero_success_rate']:.0f}%, released "
              f"{100 * res['released_rate']:.0f}% ({res['placements']} placements)", flush=True)
    print(f"wrote {record(rows, Path(args.results_dir))}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
