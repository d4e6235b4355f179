"""Stage and staged reward along scripted LIBERO-Object episodes: a success, and a drop after the lift.

Usage:
    python -m benchmarks.reward_trace [--task 1] [--seed 0] [--carry-steps 10]

The first episode is the scripted expert's; in the second the expert's gripper opens after the target has
been carried for ``--carry-steps`` steps, and is held open (no motion) for ``--open-steps`` steps. Writes
benchmarks/results/reward_trace.{csv,png,json}: one CSV row per step with the stage, the staged reward and
its terms, the dense reward for comparison, the env's own reward and the facts the reward read.
"""

from __future__ import annotations

import argparse
import csv
from typing import Any

import gymnasium as gym
import numpy as np

import libero_gym
from benchmarks._common import RESULTS, write_json
from libero_gym.experts import ScriptedExpert
from rewards import RewardConfig, Stage, StagedRewardWrapper, dense_reward

FACTS = (
    "is_success",
    "target_grasped",
    "target_in_basket",
    "target_lift",
    "eef_to_target",
    "target_to_basket_xy",
)
TERMS = ("reward/stage_value", "reward/basket_approach", "reward/basket_above", "reward/drop")
OPEN_GRIPPER = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)


def run_episode(
    env: gym.Env,
    expert: ScriptedExpert,
    seed: int,
    carry_steps: int | None,
    open_steps: int,
    config: RewardConfig,
) -> list[dict[str, Any]]:
    """One episode; with ``carry_steps``, open the gripper after that many steps in stage 3."""
    _, info = env.reset(seed=seed)
    expert.reset()
    rows: list[dict[str, Any]] = []
    stage3_steps, opened = 0, 0
    for step in range(1, libero_gym.MAX_EPISODE_STEPS + 1):
        dropping = carry_steps is not None and stage3_steps >= carry_steps
        action = OPEN_GRIPPER if dropping else expert.act(info)
        _, reward, terminated, truncated, info = env.step(action)
        stage3_steps += info["stage"] == Stage.LIFTED
        opened += dropping
        dense, _ = dense_reward(info, config)
        rows.append(
            {
                "step": step,
                "phase": "open gripper" if dropping else expert.phase,
                "stage": info["stage"],
                "reward": reward,
                **{key.removeprefix("reward/"): info[key] for key in TERMS},
                "dense_reward": float(dense),
                "env_reward": info["env_reward"],
                **{key: info[key] for key in FACTS},
            }
        )
        if terminated or truncated or opened >= open_steps:
            break
    return rows


def plot(episodes: dict[str, list[dict[str, Any]]], task: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(episodes), figsize=(6 * len(episodes), 6), sharex="col", squeeze=False)
    for col, (title, rows) in enumerate(episodes.items()):
        steps = [r["step"] for r in rows]
        stage_ax, reward_ax = axes[0, col], axes[1, col]
        stage_ax.step(steps, [r["stage"] for r in rows], where="post", color="tab:blue")
        stage_ax.set_yticks(range(5), [f"{s.value} {s.name.lower()}" for s in Stage])
        stage_ax.set_ylim(-0.4, 4.4)
        stage_ax.set_title(title)
        stage_ax.grid(alpha=0.3)
        reward_ax.step(
            steps, [r["reward"] for r in rows], where="post", color="tab:red", label="staged reward"
        )
        reward_ax.plot(steps, [r["dense_reward"] for r in rows], color="tab:gray", lw=1, label="dense reward")
        drops = [r["step"] for r in rows if r["drop"] != 0]
        if drops:
            reward_ax.axvspan(drops[0], drops[-1] + 1, color="tab:red", alpha=0.1, label="drop penalty")
        reward_ax.set_xlabel("policy step")
        reward_ax.grid(alpha=0.3)
        reward_ax.legend(loc="upper left", fontsize=8)
    axes[0, 0].set_ylabel("stage")
    axes[1, 0].set_ylabel("reward per step")
    fig.suptitle(f"LiberoObject-Task{task}-v0: staged reward along scripted episodes")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=int, default=1, help="task number 1-10")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of both episodes")
    parser.add_argument("--carry-steps", type=int, default=10, help="steps carried before the gripper opens")
    parser.add_argument("--open-steps", type=int, default=40, help="steps the open gripper is held")
    args = parser.parse_args()

    config = RewardConfig()
    env = StagedRewardWrapper(gym.make(f"LiberoObject-Task{args.task}-v0", obs_mode="state"), config=config)
    expert = ScriptedExpert(task=args.task)
    try:
        episodes = {
            "scripted expert": run_episode(env, expert, args.seed, None, args.open_steps, config),
            f"gripper opened after {args.carry_steps} steps in stage 3": run_episode(
                env, expert, args.seed, args.carry_steps, args.open_steps, config
            ),
        }
    finally:
        env.close()

    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "reward_trace.csv", "w", newline="") as f:
        names = ["episode", *episodes["scripted expert"][0]]
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for title, rows in episodes.items():
            writer.writerows({"episode": title, **r} for r in rows)
    plot(episodes, args.task, RESULTS / "reward_trace.png")

    summary = {}
    for title, rows in episodes.items():
        stages = [r["stage"] for r in rows]
        summary[title] = {
            "steps": len(rows),
            "success": bool(rows[-1]["is_success"]),
            "first_step_of_stage": {str(s): stages.index(s) + 1 for s in sorted(set(stages))},
            "stage_never_decreased": all(b >= a for a, b in zip(stages, stages[1:], strict=False)),
            "drop_steps": sum(r["drop"] != 0 for r in rows),
            "return": float(sum(r["reward"] for r in rows)),
            "dense_return": float(sum(r["dense_reward"] for r in rows)),
        }
        print(f"{title}: {summary[title]}")
    write_json(
        "reward_trace", {"task": args.task, "seed": args.seed, "config": vars(config), "episodes": summary}
    )


if __name__ == "__main__":
    main()
