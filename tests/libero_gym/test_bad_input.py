"""Bad input gets a clear error that names the value and what is accepted."""

import gymnasium as gym
import numpy as np
import pytest

import libero_gym  # noqa: F401
from libero_gym import LiberoObjectEnv


@pytest.fixture(scope="module")
def env():
    e = gym.make("LiberoObject-Task1-v0", obs_mode="state", max_episode_steps=3)
    yield e
    e.close()


def test_unknown_task_id():
    with pytest.raises(gym.error.Error):
        gym.make("LiberoObject-Task11-v0")
    with pytest.raises(ValueError, match="1-10"):
        gym.make("LiberoObject-v0", task=11)
    with pytest.raises(ValueError, match="Accepted instructions"):
        gym.make("LiberoObject-v0", task="pick up the spoon")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"obs_mode": "depth"}, "obs_mode='depth'"),
        ({"render_mode": "human"}, "render_mode='human'"),
        ({"image_size": 0}, "image_size=0"),
        ({"image_size": (64,)}, "image_size"),
        ({"warmup_steps": -1}, "warmup_steps=-1"),
        ({"action_out_of_range": "wrap"}, "action_out_of_range='wrap'"),
        ({"robot_init_noise": -0.01}, "robot_init_noise=-0.01"),
        ({"robot_init_noise": True}, "robot_init_noise=True"),
        ({"robot_init_noise": "0.02"}, "robot_init_noise='0.02'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LiberoObjectEnv(task=1, **kwargs)


def test_step_before_reset():
    e = LiberoObjectEnv(task=1)
    with pytest.raises(RuntimeError, match="call reset"):
        e.step(np.zeros(7, np.float32))


@pytest.mark.parametrize(
    "action, match",
    [
        (np.zeros(6, np.float32), r"shape \(6,\)"),
        (np.zeros((1, 7), np.float32), r"shape \(1, 7\)"),
        (np.array(["a"] * 7), "dtype"),
        (np.array([0, 0, np.nan, 0, 0, 0, 0], np.float32), r"non-finite entries at index \[2\]"),
        (np.array([0, 0, 0, 0, 0, np.inf, 0], np.float32), r"non-finite entries at index \[5\]"),
    ],
)
def test_bad_actions(env, action, match):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=match):
        env.step(action)


def test_out_of_range_is_clipped_by_default_and_raises_on_request(env):
    env.reset(seed=0)
    # The action handed to the simulator's control loop is the clipped one (robosuite's controller would
    # clip too, so checking only where the gripper went could not tell).
    received = []
    base = env.unwrapped
    control = base._control_step
    base._control_step = lambda action: (received.append(np.array(action)), control(action))[1]
    _, _, _, _, info_big = env.step(np.array([5, 0, 0, 0, 0, -2.5, -1], np.float32))
    np.testing.assert_array_equal(received[-1], [1, 0, 0, 0, 0, -1, -1])
    env.reset(seed=0)
    _, _, _, _, info_one = env.step(np.array([1, 0, 0, 0, 0, -1, -1], np.float32))
    np.testing.assert_array_equal(info_big["eef_pos"], info_one["eef_pos"])
    strict = LiberoObjectEnv(task=1, action_out_of_range="raise")
    strict.reset(seed=0)
    with pytest.raises(ValueError, match=r"outside \[-1, 1\]"):
        strict.step(np.array([1.5, 0, 0, 0, 0, 0, 0], np.float32))
    strict.close()


def test_step_after_the_episode_ended():
    env = LiberoObjectEnv(task=1, max_episode_steps=3)
    env.reset(seed=0)
    truncated = False
    for _ in range(3):
        *_, truncated, _ = env.step(np.zeros(7, np.float32))
    assert truncated
    with pytest.raises(RuntimeError, match="max_episode_steps=3"):
        env.step(np.zeros(7, np.float32))
    env.reset(seed=0)  # and a reset makes it usable again
    env.step(np.zeros(7, np.float32))
    env.close()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"init_state": 50}, "init_state=50"),
        ({"init_state": -1}, "init_state=-1"),
        ({"init_state": "3"}, "init_state='3'"),
        ({"placement_seed": 1.5}, "placement_seed=1.5"),
        ({"init_state": 1, "placement_seed": 2}, "not both"),
        ({"init_sate": 1}, "init_sate"),
    ],
)
def test_bad_reset_options(env, options, match):
    with pytest.raises(ValueError, match=match):
        env.reset(options=options)
