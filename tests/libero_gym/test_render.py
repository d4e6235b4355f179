"""Camera observations and render() on the real simulation (EGL software rendering)."""

import contextlib
import io
import os

import gymnasium as gym
import numpy as np
import pytest

import libero_gym
from libero_gym import LiberoObjectEnv

pytestmark = pytest.mark.render


def test_rgb_state_observations_match_the_space():
    env = LiberoObjectEnv(task=4, obs_mode="rgb_state", image_size=(64, 80))
    obs, _ = env.reset(options={"init_state": 0})
    assert env.observation_space.contains(obs)
    for key in ("agentview", "wrist"):
        img = obs[key]
        assert img.shape == (64, 80, 3) and img.dtype == np.uint8
        assert img.std() > 10, f"{key} image looks blank"
    obs2, *_ = env.step(np.zeros(7, np.float32))
    assert not np.array_equal(obs["wrist"], obs2["wrist"]) or not np.array_equal(obs["agentview"], obs2["agentview"])
    env.close()


def test_images_are_upright_camera_views_equal_to_libero_flipped():
    """LIBERO (robosuite) returns images upside down; ours are the same pixels flipped vertically."""
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    with contextlib.redirect_stdout(io.StringIO()):
        suite = benchmark.get_benchmark_dict()["libero_object"]()
        t = suite.get_task(3)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        raw = OffScreenRenderEnv(bddl_file_name=bddl, camera_heights=128, camera_widths=128)
        raw.seed(0)
        raw.reset()
        raw_obs = raw.set_init_state(suite.get_task_init_states(3)[5])
    ours = LiberoObjectEnv(task=4, obs_mode="rgb", image_size=128, warmup_steps=0, msaa=True)
    obs, _ = ours.reset(options={"init_state": 5})
    for key, raw_key in (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image")):
        theirs = raw_obs[raw_key].astype(np.int16)
        mine = obs[key].astype(np.int16)
        # With LIBERO's anti-aliasing (msaa=True) the images are identical, pixel for pixel.
        np.testing.assert_array_equal(mine, theirs[::-1])
        assert np.abs(theirs - mine).mean() > 10, key
    raw.close()
    ours.close()


@pytest.fixture(scope="module")
def agentview_at_seed_0():
    """The 96 px agentview observation after ``reset(seed=0)`` of Task1."""
    env = gym.make("LiberoObject-Task1-v0", obs_mode="rgb", image_size=96)
    obs, _ = env.reset(seed=0)
    env.close()
    return obs["agentview"]


@pytest.mark.parametrize("obs_mode", libero_gym.OBS_MODES)
def test_render_returns_a_frame_in_every_obs_mode(obs_mode, agentview_at_seed_0):
    env = gym.make("LiberoObject-Task1-v0", obs_mode=obs_mode, render_mode="rgb_array", render_size=96, image_size=64)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8 and frame.std() > 10
    # render() is the agentview camera: at the observation's size it is the observation's picture.
    np.testing.assert_array_equal(frame, agentview_at_seed_0)
    for _ in range(3):
        env.step(np.array([0, 0, 1, 0, 0, 0, -1], np.float32))
    assert not np.array_equal(env.render(), frame), "the frame should follow the scene"
    env.close()


def test_render_without_render_mode_warns():
    quiet = libero_gym.LiberoObjectEnv(task=1)
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None
    quiet.close()
