"""Worker failures of the async vector env on the reset(), call() and set_attr() paths, and workers that raise.

Real LIBERO workers (state mode) unless a hang must be staged; test_vector.py covers step() after a kill
and a worker that hangs in step().
"""

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

import libero_gym  # noqa: F401  (registers the ids)
from libero_gym import LiberoAsyncVectorEnv, WorkerError

TIMEOUT = 60
"""Seconds the vector envs of these tests wait for a worker; every failure must surface well before."""


def _killed(worker: int = 1):
    """Two running Task1 workers, then ``worker`` is SIGKILLed (as the out-of-memory killer would)."""
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, obs_mode="state", timeout=TIMEOUT)
    envs.reset(seed=0)
    os.kill(envs.processes[worker].pid, signal.SIGKILL)
    envs.processes[worker].join(10)
    return envs


@pytest.mark.parametrize(
    "what, call",
    [
        ("reset()", lambda envs: envs.reset(seed=1)),
        ("call('instruction')", lambda envs: envs.call("instruction")),
    ],
)
def test_killed_worker_on_reset_and_call_raises_a_clear_error(what, call):
    envs = _killed(worker=1)
    try:
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) died, killed by SIGKILL") as err:
            call(envs)
        assert time.monotonic() - t0 < TIMEOUT / 2
        assert err.value.args[0].startswith(what)
        assert envs.closed
    finally:
        envs.close(terminate=True)


def test_killed_worker_on_set_attr_raises_a_clear_error():
    envs = _killed(worker=1)
    try:
        with pytest.raises(WorkerError, match="worker 1"):
            envs.set_attr("next_init_state", [1, 2])
    finally:
        envs.close(terminate=True)


class _HangingEnv(gym.Env):
    """Answers the first reset, then hangs in every later reset and in ``slow()``."""

    observation_space = gym.spaces.Box(0, 1, (1,))
    action_space = gym.spaces.Box(0, 1, (1,))

    def __init__(self):
        self.resets = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.resets += 1
        if self.resets > 1:
            time.sleep(3600)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def slow(self):
        time.sleep(3600)


@pytest.mark.parametrize(
    "what, call", [("reset()", lambda envs: envs.reset(seed=1)), ("call('slow')", lambda envs: envs.call("slow"))]
)
def test_hung_worker_on_reset_and_call_times_out(what, call):
    envs = LiberoAsyncVectorEnv([_HangingEnv, _HangingEnv], timeout=2.0, context="fork")
    try:
        envs.reset(seed=0)
        t0 = time.monotonic()
        with pytest.raises(WorkerError, match=r"did not finish within timeout=2.0s") as err:
            call(envs)
        assert time.monotonic() - t0 < 30
        assert err.value.args[0].startswith(what)
        assert envs.closed
    finally:
        envs.close(terminate=True)


@pytest.fixture
def two_workers():
    envs = gym.make_vec("LiberoObject-Task1-v0", num_envs=2, obs_mode="state", timeout=TIMEOUT)
    envs.reset(seed=0)
    yield envs
    envs.close(terminate=True)


def test_worker_that_raises_in_step_passes_its_error_on(two_workers):
    actions = np.zeros((2, 7), np.float32)
    actions[1, 2] = np.nan
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"sub-env 1: .*non-finite entries at index \[2\]"):
        two_workers.step(actions)
    assert time.monotonic() - t0 < TIMEOUT / 2


def test_worker_that_raises_in_reset_passes_its_error_on(two_workers):
    with pytest.raises(ValueError, match=r"sub-env \d: .*init_state=99"):
        two_workers.reset(options={"init_state": 99})


def test_after_a_worker_raised_in_step_the_next_step_asks_for_a_reset_naming_it(two_workers):
    """The other sub-env stepped while sub-env 1 did not: stepping on would mix episodes out of step."""
    actions = np.zeros((2, 7), np.float32)
    actions[1, 2] = np.nan
    with pytest.raises(ValueError):
        two_workers.step(actions)
    with pytest.raises(RuntimeError, match=r"step\(\) needs a reset\(\) first: sub-env 1 raised ValueError"):
        two_workers.step(np.zeros((2, 7), np.float32))
    two_workers.reset(seed=1)
    two_workers.step(np.zeros((2, 7), np.float32))
