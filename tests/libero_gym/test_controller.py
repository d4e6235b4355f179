"""The fast control loop reproduces raw LIBERO's dynamics bit for bit, on every task."""

import contextlib
import io
import os

import numpy as np
import pytest

from libero_gym import TASKS, LiberoObjectEnv
from libero_gym.controller import FastControlLoop, supports

STEPS = 300


def _raw_libero(task: int, init_state: int):
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    with contextlib.redirect_stdout(io.StringIO()):
        suite = benchmark.get_benchmark_dict()["libero_object"]()
        t = suite.get_task(task - 1)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        raw = OffScreenRenderEnv(bddl_file_name=bddl, has_offscreen_renderer=False, use_camera_obs=False)
        raw.seed(0)
        raw.reset()
        raw.set_init_state(suite.get_task_init_states(task - 1)[init_state])
    return raw


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_dynamics_match_raw_libero_bit_for_bit_over_300_random_steps(task):
    """Same benchmark state, 300 uniform random actions in [-1, 1]: identical qpos, qvel and success."""
    init_state = task - 1
    raw = _raw_libero(task, init_state)
    ours = LiberoObjectEnv(task=task, warmup_steps=0, max_episode_steps=None)
    try:
        ours.reset(options={"init_state": init_state})
        assert isinstance(getattr(ours._control_step, "__self__", None), FastControlLoop), "fast loop not in use"
        actions = np.random.default_rng(task).uniform(-1, 1, (STEPS, 7))
        np.testing.assert_array_equal(ours._data.qpos, raw.env.sim.data.qpos)
        for k, a in enumerate(actions):
            _, _, raw_done, _ = raw.step(a)
            _, _, terminated, _, _ = ours.step(a)
            assert terminated == bool(raw_done), f"step {k}"
            np.testing.assert_array_equal(ours._data.qpos, raw.env.sim.data.qpos, err_msg=f"qpos at step {k}")
            np.testing.assert_array_equal(ours._data.qvel, raw.env.sim.data.qvel, err_msg=f"qvel at step {k}")
            np.testing.assert_array_equal(ours._data.ctrl, raw.env.sim.data.ctrl, err_msg=f"ctrl at step {k}")
            if terminated:  # a random policy almost never succeeds; stop where raw LIBERO would end too
                break
        assert np.abs(ours._data.qpos[:7] - raw.env.sim.data.qpos[:7]).max() == 0.0
    finally:
        raw.close()
        ours.close()


def test_compiled_and_numpy_substeps_agree_bit_for_bit():
    """The compiled substeps and the NumPy ones (robosuite's code path) give the same state."""
    envs = [LiberoObjectEnv(task=7, warmup_steps=0) for _ in range(2)]
    try:
        for e in envs:
            e.reset(options={"init_state": 3})
        numpy_loop = FastControlLoop(envs[1]._sim_env, use_kernel=False)
        envs[1]._control_step = numpy_loop.step
        assert envs[0]._control_step.__self__._use_kernel and not numpy_loop._use_kernel
        for a in np.random.default_rng(7).uniform(-1, 1, (40, 7)):
            for e in envs:
                e.step(a)
            np.testing.assert_array_equal(envs[0]._data.qpos, envs[1]._data.qpos)
            np.testing.assert_array_equal(envs[0]._data.ctrl, envs[1]._data.ctrl)
    finally:
        for e in envs:
            e.close()


def test_fast_loop_covers_libero_object_and_refuses_other_controllers():
    env = LiberoObjectEnv(task=1, warmup_steps=0)
    try:
        env.reset(seed=0)
        sim_env = env._sim_env
        assert supports(sim_env)
        controller = sim_env.robots[0].controller
        controller.impedance_mode = "variable"
        assert not supports(sim_env)
        controller.impedance_mode = "fixed"
        controller.uncoupling = False
        assert not supports(sim_env)
    finally:
        env.close()
