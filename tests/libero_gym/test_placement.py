"""Grasp and placement facts on the real simulation: held means held, placed means placed."""

import gymnasium as gym
import numpy as np
import pytest

import libero_gym
from libero_gym import TASKS, PlacementConfig
from libero_gym.experts import ScriptedExpert, run_expert_episode

LIFT_OFF = 0.01
"""The target has left the floor once it is this much (m) above its rest height."""


@pytest.fixture(scope="module")
def expert_runs():
    """The scripted expert on benchmark state 0 of every task, ending on placement, with the release check."""
    runs = {}
    for task in TASKS:
        env = gym.make(f"LiberoObject-Task{task}-v0", terminate_on="is_placed", release_check=True)
        runs[task] = run_expert_episode(env, ScriptedExpert(task), options={"init_state": 0})
        env.close()
    return runs


def _carry(record) -> tuple[int, int, int]:
    """(first close command, lift-off, release command) step indices into the record's step infos."""
    grip = record["actions"][:, -1]
    lift = np.array([info["target_lift"] for info in record["infos"][1:]])
    close = int(np.argmax(grip > 0))
    lift_off = int(np.argmax(lift > LIFT_OFF))
    release = lift_off + int(np.argmax(grip[lift_off:] < 0))
    assert grip[close] > 0 and lift[lift_off] > LIFT_OFF and grip[release] < 0
    return close, lift_off, release


@pytest.mark.parametrize("task", list(TASKS))
def test_target_grasped_on_every_step_of_the_expert_carry(expert_runs, task):
    """True from lift-off to the release command (Task4 state 0 is where robosuite's pad-only check fails)."""
    record = expert_runs[task]
    infos = record["infos"][1:]  # infos[t] follows actions[t]
    close, lift_off, release = _carry(record)
    grasped = np.array([info["target_grasped"] for info in infos])
    assert grasped[lift_off:release].all(), f"Task{task}: not grasped at steps {np.flatnonzero(~grasped[lift_off:release]) + lift_off}"
    # Open gripper touching nothing, before the first close command: never grasped, always released.
    assert not grasped[:close].any()
    assert all(info["target_released"] for info in infos[:close])
    # Commanded open over the basket: no longer grasped from the release command on.
    assert not grasped[release:].any()


@pytest.mark.parametrize("task", list(TASKS))
def test_expert_ends_placed_and_passes_the_release_check(expert_runs, task):
    record = expert_runs[task]
    last = record["infos"][-1]
    assert last["is_success"] and last["is_placed"], f"Task{task}: {last}"
    assert last["target_released"] and not last["basket_disturbed"]
    assert last["placed_after_release"]
    # The episode went past LIBERO's first success until the object was let go.
    first_success = next(t for t, info in enumerate(record["infos"]) if info["is_success"])
    assert first_success < len(record["infos"]) - 1
    assert not record["infos"][first_success]["is_placed"]
    assert not any(info["basket_disturbed"] for info in record["infos"])


def _tip_the_basket(env):
    """Carry the target with the expert, then drive it down into the basket's far wall while holding it."""
    push = np.array([1.0, 0.0, -0.5, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    expert = ScriptedExpert(4)
    _, info = env.reset(options={"init_state": 0})
    infos = [info]
    for _ in range(280):
        action = expert.act(info)
        if expert.phase in ("lower", "release", "done"):
            action = push
        _, _, terminated, truncated, info = env.step(action)
        infos.append(info)
        if terminated or truncated:
            break
    return infos, terminated


def test_tipping_the_basket_with_the_object_held_is_a_libero_success_but_not_placed():
    env = gym.make("LiberoObject-Task4-v0", release_check=True)
    infos, terminated = _tip_the_basket(env)
    env.close()
    last = infos[-1]
    assert terminated and last["is_success"], "LIBERO's predicate counts the tipped basket"
    assert last["target_grasped"] and last["basket_disturbed"]
    assert last["basket_tilt_deg"] > PlacementConfig().basket_max_tilt_deg
    assert not last["is_placed"] and not last["placed_after_release"]


def test_the_release_check_lets_go_of_the_object():
    """LIBERO's first success comes with the object gripped: placed only after the release steps."""
    results = []
    for steps in (0, PlacementConfig().release_steps):
        env = gym.make("LiberoObject-Task1-v0", release_check=True, placement=PlacementConfig(release_steps=steps))
        record = run_expert_episode(env, ScriptedExpert(1), options={"init_state": 3})
        env.close()
        last = record["infos"][-1]
        assert last["is_success"] and last["target_grasped"] and not last["is_placed"]
        results.append(last["placed_after_release"])
    assert results == [False, True]


def test_bad_placement_options_are_rejected_before_the_simulator_starts():
    with pytest.raises(ValueError, match="terminate_on='done'"):
        gym.make("LiberoObject-Task1-v0", terminate_on="done")
    with pytest.raises(ValueError, match="release_check='yes'"):
        gym.make("LiberoObject-Task1-v0", release_check="yes")
    with pytest.raises(ValueError, match="placement="):
        gym.make("LiberoObject-Task1-v0", placement={"release_steps": 5})
    with pytest.raises(ValueError, match=r"basket_max_tilt_deg must be a finite number > 0, got nan"):
        PlacementConfig(basket_max_tilt_deg=float("nan"))
    assert libero_gym.TERMINATION_KEYS == ("is_success", "is_placed")
