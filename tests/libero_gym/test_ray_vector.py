"""RayVectorEnv on a local Ray cluster: same rollouts as LiberoAsyncVectorEnv, clear errors for dead actors."""

import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import libero_gym
from libero_gym import LiberoAsyncVectorEnv, RayVectorEnv, WorkerError

ray = pytest.importorskip("ray", reason="RayVectorEnv tests need the 'ray' extra")


pytestmark = pytest.mark.usefixtures("local_ray")  # tests/conftest.py


def _assert_same(a, b, what):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _assert_same(a[k], b[k], f"{what}[{k!r}]")
    elif isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{what}[{i}]")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=what)
        assert np.asarray(a).dtype == np.asarray(b).dtype, what


def test_seeded_rollout_matches_async_vector_env():
    """Same seeds, options and actions through both vector envs: identical observations, rewards and info."""
    kwargs = dict(num_envs=2, obs_mode="state", max_episode_steps=8)
    ray_envs = gym.make_vec("LiberoObject-Task2-v0", vectorization="ray", **kwargs)
    async_envs = gym.make_vec("LiberoObject-Task2-v0", **kwargs)
    try:
        assert isinstance(ray_envs, RayVectorEnv) and isinstance(async_envs, LiberoAsyncVectorEnv)
        assert ray_envs.observation_space == async_envs.observation_space
        assert ray_envs.action_space == async_envs.action_space
        assert ray_envs.metadata["autoreset_mode"] == async_envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        _assert_same(ray_envs.reset(seed=3), async_envs.reset(seed=3), "reset(seed=3)")
        rng = np.random.default_rng(0)
        # 20 steps with an 8-step limit: both truncate and autoreset twice.
        for t in range(20):
            actions = rng.uniform(-1, 1, (2, 7)).astype(np.float32)
            _assert_same(ray_envs.step(actions), async_envs.step(actions), f"step {t}")
        mask = np.array([False, True])
        _assert_same(ray_envs.reset(options={"reset_mask": mask}), async_envs.reset(options={"reset_mask": mask}),
                     "reset with reset_mask")
        for envs in (ray_envs, async_envs):
            envs.set_attr("next_init_state", [0, 7])
        r_obs, r_info = ray_envs.reset(seed=0)
        a_obs, a_info = async_envs.reset(seed=0)
        _assert_same((r_obs, r_info), (a_obs, a_info), "reset after set_attr('next_init_state')")
        assert list(r_info["init_state"]) == [0, 7]
        assert ray_envs.get_attr("instruction") == async_envs.get_attr("instruction")
        assert ray_envs.call("task_id") == (2, 2)
    finally:
        ray_envs.close()
        async_envs.close()


def test_sub_env_errors_are_raised_with_their_type_and_message():
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, vectorization="ray", obs_mode="state")
    try:
        with pytest.raises(ValueError, match="Unknown reset option"):
            envs.reset(options={"bogus": 1})
        with pytest.raises(ValueError, match="Values must be a list or tuple with length equal"):
            envs.set_attr("next_init_state", [1, 2, 3])
        obs, _ = envs.reset(seed=0)  # the actors survive an env's exception
        assert obs["state"].shape == (2, libero_gym.STATE_DIM)
    finally:
        envs.close()
    with pytest.raises(gym.error.ClosedEnvironmentError):
        envs.step(envs.action_space.sample())


def test_killed_actor_raises_worker_error_within_the_timeout():
    timeout = 60
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, vectorization="ray", obs_mode="state", timeout=timeout)
    try:
        envs.reset(seed=0)
        pid, _, _ = envs.actor_hosts[1]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=rf"actor 1 \(Ray actor [0-9a-f]+, pid {pid} on .*\) died"):
            envs.step(envs.action_space.sample())
        assert time.monotonic() - t0 < timeout
        assert envs.closed
    finally:
        envs.close(terminate=True)


def test_hung_actor_raises_worker_error_after_the_timeout():
    class HangingEnv(gym.Env):  # defined here so that Ray ships it to the actors by value
        observation_space = gym.spaces.Box(0, 1, (1,))
        action_space = gym.spaces.Box(0, 1, (1,))

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(1, np.float32), {}

        def step(self, action):
            time.sleep(3600)

    envs = RayVectorEnv([HangingEnv, HangingEnv], timeout=2.0, actor_options={"num_cpus": 0.5})
    envs.reset(seed=0)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"step\(\) did not finish within timeout=2.0s"):
        envs.step(np.zeros((2, 1), np.float32))
    assert time.monotonic() - t0 < 30
    assert envs.closed


def test_bad_ray_arguments():
    with pytest.raises(ValueError, match="vectorization='threads'"):
        libero_gym.make_vec(2, task=1, vectorization="threads")
    with pytest.raises(ValueError, match="timeout=0"):
        RayVectorEnv([lambda: libero_gym.LiberoObjectEnv(task=1)], timeout=0)
    with pytest.raises(ValueError, match="actor_options=4"):
        RayVectorEnv([lambda: libero_gym.LiberoObjectEnv(task=1)], actor_options=4)


def test_importing_libero_gym_does_not_import_ray():
    code = "import sys, libero_gym; assert 'ray' not in sys.modules, 'ray was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
