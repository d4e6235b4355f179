"""Vector envs over the real simulation: shapes, autoreset metadata, shared placements, failing workers."""

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import libero_gym
from libero_gym import LiberoAsyncVectorEnv, WorkerError


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_eight_envs(mode):
    n = 8
    envs = gym.make_vec("LiberoObject-Task4-v0", num_envs=n, vectorization_mode=mode if mode == "sync" else None,
                        obs_mode="state")
    try:
        if mode == "async":
            assert isinstance(envs, LiberoAsyncVectorEnv)
        assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
        obs, info = envs.reset(seed=0)
        assert obs["state"].shape == (n, libero_gym.STATE_DIM)
        assert list(info["instruction"]) == ["pick up the bbq sauce and place it in the basket"] * n
        # Each sub-env got its own placement.
        assert len({tuple(np.round(p, 4)) for p in info["target_pos"]}) == n
        obs, rew, term, trunc, info = envs.step(envs.action_space.sample())
        assert rew.shape == term.shape == trunc.shape == (n,)
        assert info["eef_pos"].shape == (n, 3)
        assert info["target_grasped"].dtype == bool
    finally:
        envs.close()


def test_same_placement_for_a_group_and_benchmark_states_per_env():
    envs = gym.make_vec("LiberoObject-Task2-v0", num_envs=3, obs_mode="state")
    try:
        _, info = envs.reset(seed=0, options={"placement_seed": 42})
        np.testing.assert_array_equal(info["target_pos"][0], info["target_pos"][1])
        np.testing.assert_array_equal(info["target_pos"][0], info["target_pos"][2])
        envs.set_attr("next_init_state", [0, 5, 9])
        _, info = envs.reset(seed=0)
        assert list(info["init_state"]) == [0, 5, 9]
        _, info = envs.reset(seed=0, options={"init_state": 3})
        np.testing.assert_array_equal(info["target_pos"][0], info["target_pos"][2])
    finally:
        envs.close()


def test_vector_and_single_env_agree():
    single = gym.make("LiberoObject-Task1-v0", obs_mode="state")
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, vectorization_mode="sync", obs_mode="state")
    try:
        obs_v, _ = envs.reset(options={"init_state": 4})
        obs_s, _ = single.reset(options={"init_state": 4})
        np.testing.assert_array_equal(obs_v["state"][1], obs_s["state"])
        a = np.array([0.3, -0.2, 0.1, 0, 0, 0, 1], np.float32)
        obs_v, *_ = envs.step(np.stack([a, a]))
        obs_s, *_ = single.step(a)
        np.testing.assert_array_equal(obs_v["state"][0], obs_s["state"])
    finally:
        envs.close()
        single.close()


def test_killed_worker_raises_a_clear_error_quickly():
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, obs_mode="state", timeout=60)
    try:
        envs.reset(seed=0)
        os.kill(envs.processes[1].pid, signal.SIGKILL)
        envs.processes[1].join(10)
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match="worker 1"):
            envs.step(envs.action_space.sample())
        assert time.monotonic() - t0 < 60
    finally:
        envs.close(terminate=True)


class _HangingEnv(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Box(0, 1, (1,))

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        time.sleep(3600)


def test_hung_worker_times_out():
    envs = LiberoAsyncVectorEnv([_HangingEnv, _HangingEnv], timeout=2.0, context="fork")
    envs.reset(seed=0)
    with pytest.raises(WorkerError, match="timeout=2.0s"):
        envs.step(np.zeros((2, 1), np.float32))
    assert envs.closed


def test_bad_vector_arguments():
    with pytest.raises(ValueError, match="num_envs=0"):
        libero_gym.make_vec(0, task=1)
    with pytest.raises(ValueError, match="vectorization='threads'"):
        libero_gym.make_vec(2, task=1, vectorization="threads")
    with pytest.raises(ValueError, match="timeout=0"):
        LiberoAsyncVectorEnv([_HangingEnv], timeout=0)
