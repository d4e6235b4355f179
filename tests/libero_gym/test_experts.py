"""The scripted expert on the real simulation."""

import gymnasium as gym
import numpy as np
import pytest

import libero_gym  # noqa: F401
from libero_gym.experts import ExpertConfig, ScriptedExpert, run_expert_episode


@pytest.mark.parametrize("task, state", [(4, 0), (2, 3), (8, 11)])
def test_expert_reaches_success_on_benchmark_states(task, state):
    """A tall bottle (4, 8) and a flat box that needs the gripper turned (2)."""
    env = gym.make(f"LiberoObject-Task{task}-v0", obs_mode="state")
    rec = run_expert_episode(env, ScriptedExpert(task), options={"init_state": state})
    assert rec["success"], f"Task{task} state {state}: expert ended in phase {rec['infos'][-1]}"
    assert rec["infos"][-1]["is_success"]
    assert rec["actions"].shape == (rec["steps"], 7)
    assert np.all(np.abs(rec["actions"]) <= 1.0)
    # The episode terminated on success; stepping again is refused.
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(np.zeros(7, np.float32))
    env.close()


def test_expert_on_a_training_placement_and_with_noise():
    env = gym.make("LiberoObject-Task1-v0", obs_mode="state")
    rec = run_expert_episode(env, ScriptedExpert(1, noise=0.1, seed=3), seed=11)
    assert rec["success"]
    # the noise is on the executed x and y only; the intended actions are the expert's own
    diff = rec["actions"] - rec["intended_actions"]
    assert np.abs(diff[:, :2]).mean() > 0.02 and np.all(diff[:, 2:] == 0)
    assert np.all(np.abs(rec["actions"]) <= 1.0)
    clean = run_expert_episode(env, ScriptedExpert(1), seed=11)
    np.testing.assert_array_equal(clean["actions"], clean["intended_actions"])
    env.close()


def test_expert_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise=-0.1"):
        ScriptedExpert(1, noise=-0.1)
    with pytest.raises(ValueError, match="1-10"):
        ScriptedExpert(12)
    assert ExpertConfig().carry_height > 0.14  # above the basket rim
