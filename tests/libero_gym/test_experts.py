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
    with pytest.raises(ValueError, match="lift_rule='soon'.*timer, still"):
        ScriptedExpert(1, ExpertConfig(lift_rule="soon"))


def _grasp(rec):
    """(openings, hold steps, lift step) of an episode's first grasp: the steps the gripper is commanded closed
    before the lift, and the first closed step that moves up at the lift's speed."""
    actions = rec["intended_actions"]
    opening = np.array([info["gripper_opening"] for info in rec["infos"][:-1]])
    first = int(np.argmax(actions[:, -1] > 0))
    lift = first + int(np.argmax(actions[first:, 2] > 0.2))
    assert np.all(actions[first:lift, -1] > 0)
    return opening, list(range(first, lift)), lift


@pytest.mark.parametrize("task", [2, 4])
def test_still_lift_rule_never_holds_at_a_still_state(task):
    """lift_rule="still": every hold, once the fingers have begun to close, is at a state where they moved since the
    previous step, and the lift
    starts at the first state where they stopped, so that a policy without memory can read when to lift from the
    state; while closing it keeps closing in on the grasp point. The default ("timer") holds on Task4 at a state where the fingers no longer move, then lifts from it."""
    env = gym.make(f"LiberoObject-Task{task}-v0", obs_mode="state")
    config = ExpertConfig(lift_rule="still")
    rec = run_expert_episode(env, ScriptedExpert(task, config, noise=0.2, seed=0), seed=5000)
    assert rec["success"]
    opening, holds, lift = _grasp(rec)
    assert len(holds) >= 3  # it waited for the fingers to close
    for t in holds[1:]:  # once the fingers have begun to close (open, they are far from the lift's state)
        if opening[holds[0]] - opening[t] > 5 * config.still_opening:
            assert abs(opening[t] - opening[t - 1]) >= config.still_opening, (t, opening[holds[0]:lift + 1])
    assert abs(opening[lift] - opening[lift - 1]) < config.still_opening
    z = rec["intended_actions"][holds[0], 2]
    assert z < -0.1  # closing, it goes on towards the grasp point: no z jump to 0 right above it
    timer = run_expert_episode(env, ScriptedExpert(task, noise=0.2, seed=0), seed=5000)
    t_opening, t_holds, t_lift = _grasp(timer)
    still_holds = [t for t in t_holds[1:] if abs(t_opening[t] - t_opening[t - 1]) < config.still_opening]
    assert t_lift > lift and (task != 4 or len(still_holds) >= 2)
    assert not np.any(timer["intended_actions"][t_holds, :3])  # the timer rule stops dead while closing
    env.close()


def test_close_steps_zero_lifts_at_the_first_closed_step():
    """close_steps=0 under the timer rule caps the close phase at 0 steps: the expert starts lifting at once and
    the fingers close during the slow lift."""
    env = gym.make("LiberoObject-Task4-v0", obs_mode="state")
    rec = run_expert_episode(env, ScriptedExpert(4, ExpertConfig(close_steps=0)), seed=5000, max_steps=120)
    _, holds, lift = _grasp(rec)
    assert len(holds) <= 1 and rec["infos"][lift]["gripper_opening"] > 0.07  # still open when the lift starts
    env.close()
