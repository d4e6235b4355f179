"""The LIBERO-Object env on the real simulation (state mode unless images matter)."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from libero_gym import ENV_IDS, STATE_DIM, STATE_LAYOUT, LiberoObjectEnv

INFO_KEYS = {
    "is_success": (bool, np.bool_),
    "task_id": (int,),
    "instruction": (str,),
    "eef_pos": (np.ndarray,),
    "target_pos": (np.ndarray,),
    "basket_pos": (np.ndarray,),
    "gripper_opening": (float,),
    "target_grasped": (bool, np.bool_),
    "target_lift": (float,),
    "target_in_basket": (bool, np.bool_),
    "eef_to_target": (float,),
    "target_to_basket": (float,),
    "target_to_basket_xy": (float,),
    "elapsed_steps": (int,),
}


@pytest.fixture(scope="module")
def env():
    e = gym.make("LiberoObject-Task4-v0", obs_mode="state")
    yield e
    e.close()


def test_registered_ids():
    assert ENV_IDS == ["LiberoObject-v0"] + [f"LiberoObject-Task{i}-v0" for i in range(1, 11)]
    for env_id in ENV_IDS:
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 280
    assert gym.spec("LiberoObject-Task4-v0").kwargs == {"task": 4}


def test_generic_id_takes_task_number_or_instruction():
    e1 = gym.make("LiberoObject-v0", task=4)
    e2 = gym.make("LiberoObject-v0", task="pick up the bbq sauce and place it in the basket")
    assert e1.unwrapped.instruction == e2.unwrapped.instruction == "pick up the bbq sauce and place it in the basket"
    e1.close()
    e2.close()


def test_spaces_are_declared_without_starting_the_simulator():
    for mode, keys in [("state", {"state"}), ("rgb", {"agentview", "wrist"}), ("rgb_state", {"agentview", "wrist", "state"})]:
        e = LiberoObjectEnv(task=2, obs_mode=mode, image_size=(64, 96))
        assert set(e.observation_space.spaces) == keys
        if "agentview" in keys:
            assert e.observation_space["agentview"].shape == (64, 96, 3)
        if "state" in keys:
            assert e.observation_space["state"].shape == (STATE_DIM,)
        assert e.action_space.shape == (7,)
        assert e._sim_env is None
        e.close()
    assert max(s.stop for s in STATE_LAYOUT.values()) == STATE_DIM


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_check_env_every_registered_id(env_id):
    e = gym.make(env_id, obs_mode="state")
    check_env(e.unwrapped, skip_render_check=True)
    e.close()


def test_info_contract_on_reset_and_step(env):
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    for key, types in INFO_KEYS.items():
        assert key in info, key
        assert isinstance(info[key], types), (key, type(info[key]))
    for key in ("eef_pos", "target_pos", "basket_pos"):
        assert info[key].shape == (3,)
    assert info["instruction"] == env.unwrapped.instruction
    assert info["task_id"] == 4
    assert info["elapsed_steps"] == 3
    np.testing.assert_allclose(info["eef_to_target"], np.linalg.norm(info["target_pos"] - info["eef_pos"]))
    np.testing.assert_allclose(
        info["target_to_basket_xy"], np.linalg.norm((info["basket_pos"] - info["target_pos"])[:2])
    )
    state = obs["state"]
    np.testing.assert_allclose(state[STATE_LAYOUT["eef_pos"]], info["eef_pos"], atol=1e-6)
    np.testing.assert_allclose(state[STATE_LAYOUT["target_pos"]], info["target_pos"], atol=1e-6)
    assert reward == 0.0 and not terminated and not truncated
    # At rest on the floor, the target is neither lifted, grasped nor in the basket.
    assert abs(info["target_lift"]) < 0.01 and not info["target_grasped"] and not info["target_in_basket"]
    assert 0.0 <= info["gripper_opening"] <= 0.09


def test_same_seed_same_actions_same_observations(env):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (15, 7)).astype(np.float32)

    def rollout():
        obs, _ = env.reset(seed=123)
        out = [obs["state"]]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs["state"])
        return np.stack(out)

    a, b = rollout(), rollout()
    np.testing.assert_array_equal(a, b)
    c, _ = env.reset(seed=124)
    assert not np.allclose(c["state"], a[0]), "a different seed should give a different placement"


def test_placement_seed_option_fixes_the_scene(env):
    o1, _ = env.reset(seed=1, options={"placement_seed": 77})
    o2, _ = env.reset(seed=2, options={"placement_seed": 77})
    np.testing.assert_array_equal(o1["state"], o2["state"])


def _arm_offsets(env):
    inner = env.unwrapped
    return inner._data.qpos[inner._robot._ref_joint_pos_indexes] - np.asarray(inner._robot.init_qpos)


def test_robot_init_noise_spreads_the_arm_start_like_the_benchmark_states(env):
    """Drawn placements start the arm at one pose; the benchmark states and ``robot_init_noise`` spread it (measured
    after the warm-up, as a policy sees it), and the noise leaves the objects of a placement where they were."""
    from libero_gym.arm_start import BENCHMARK_ROBOT_INIT_NOISE

    seeds = range(8_000_000, 8_000_012)
    fixed = []
    for s in seeds:
        _, info = env.reset(options={"placement_seed": s})
        fixed.append((_arm_offsets(env), info["target_pos"], info["basket_pos"]))
    bench = []
    for k in range(12):
        env.reset(options={"init_state": k})
        bench.append(_arm_offsets(env))
    noisy_env = gym.make("LiberoObject-Task4-v0", robot_init_noise=BENCHMARK_ROBOT_INIT_NOISE)
    try:
        noisy = []
        for s, (_, target, basket) in zip(seeds, fixed):
            _, info = noisy_env.reset(options={"placement_seed": s})
            noisy.append(_arm_offsets(noisy_env))
            np.testing.assert_allclose(info["target_pos"], target, atol=1e-3)
            np.testing.assert_allclose(info["basket_pos"], basket, atol=1e-3)
        o1, _ = noisy_env.reset(options={"placement_seed": seeds[0]})
        o2, _ = noisy_env.reset(options={"placement_seed": seeds[0]})
        np.testing.assert_array_equal(o1["state"], o2["state"])
        # the benchmark states are restored whole: the option does not touch them
        b_noisy, _ = noisy_env.reset(options={"init_state": 3})
        b_fixed, _ = env.reset(options={"init_state": 3})
        np.testing.assert_array_equal(b_noisy["state"], b_fixed["state"])
    finally:
        noisy_env.close()
    spread = {name: float(np.std(np.asarray(rows)[:, :4])) for name, rows in
              (("fixed", [f[0] for f in fixed]), ("bench", bench), ("noisy", noisy))}
    assert spread["fixed"] < 1e-4, spread
    assert spread["bench"] > 0.008 and spread["noisy"] > 0.008, spread
    assert 0.5 < spread["noisy"] / spread["bench"] < 2.0, spread


def test_global_numpy_rng_is_left_alone(env):
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    env.reset(seed=0)
    assert np.random.rand() == expected


def test_init_state_option_restores_the_benchmark_state(env):
    inner = env.unwrapped
    _, info = env.reset(options={"init_state": 7})
    # Benchmark state 7's target position, read from the stored flattened MuJoCo state before warm-up.
    inner._libero.set_init_state(inner.init_states[7])
    target_at_state = inner._data.xpos[inner._target_bid].copy()
    assert info["init_state"] == 7
    np.testing.assert_allclose(info["target_pos"][:2], target_at_state[:2], atol=5e-3)


def _object_xy(model, qpos_rows):
    """x, y of every free-joint body (the six objects and the basket) in rows of MuJoCo qpos."""
    import mujoco

    free = [j for j in range(model.njnt) if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_FREE]
    idx = np.concatenate([np.arange(model.jnt_qposadr[j], model.jnt_qposadr[j] + 2) for j in free])
    return np.asarray(qpos_rows)[..., idx]


def test_training_resets_never_reuse_a_benchmark_state():
    """Object placements of seeded resets against the 50 stored states, compared before any warm-up."""
    e = LiberoObjectEnv(task=4, warmup_steps=0)
    e.reset(seed=0)
    model = e._model
    states = e.init_states
    assert states.shape[0] == 50
    # A flattened MuJoCo state is [time, qpos, qvel]: the objects' positions as LIBERO stored them.
    bench = _object_xy(model, states[:, 1 : 1 + model.nq])
    pairwise = np.abs(bench[:, None] - bench[None]).max(-1)
    np.fill_diagonal(pairwise, np.inf)
    # The benchmark states differ from each other by >= 2.4 mm in some object's x or y: 1 mm separates them.
    same_scene = 1e-3
    assert pairwise.min() > same_scene
    # Positive control: a reset on benchmark state k places every object exactly as state k.
    for k in (0, 23, 49):
        e.reset(options={"init_state": k})
        dist = np.abs(bench - _object_xy(model, e._data.qpos)).max(-1)
        assert dist[k] < 1e-9 and np.argmin(dist) == k
    for seed in range(5):
        e.reset(seed=seed)
        dist = np.abs(bench - _object_xy(model, e._data.qpos)).max(-1)
        assert dist.min() > same_scene, (seed, int(np.argmin(dist)), dist.min())
    e.close()


def test_warmup_steps_are_configurable():
    e = gym.make("LiberoObject-Task1-v0", warmup_steps=0)
    _, info0 = e.reset(seed=0)
    e.close()
    e = gym.make("LiberoObject-Task1-v0", warmup_steps=10)
    _, info10 = e.reset(seed=0)
    e.close()
    assert info0["elapsed_steps"] == info10["elapsed_steps"] == 0
    # The warm-up opens the gripper fully.
    assert info10["gripper_opening"] > info0["gripper_opening"] + 1e-3


def test_dynamics_match_raw_libero_bit_for_bit():
    """Same benchmark state and actions: libero_gym and LIBERO's own OffScreenRenderEnv agree exactly."""
    import contextlib
    import io
    import os

    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    with contextlib.redirect_stdout(io.StringIO()):
        suite = benchmark.get_benchmark_dict()["libero_object"]()
        t = suite.get_task(3)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        raw = OffScreenRenderEnv(bddl_file_name=bddl, has_offscreen_renderer=False, use_camera_obs=False)
        raw.seed(0)
        raw.reset()
        raw.set_init_state(suite.get_task_init_states(3)[2])
    ours = LiberoObjectEnv(task=4, warmup_steps=0)
    ours.reset(options={"init_state": 2})
    actions = np.random.default_rng(1).uniform(-1, 1, (12, 7))
    raw_q, our_q = [raw.env.sim.data.qpos.copy()], [ours._data.qpos.copy()]
    for a in actions:
        raw.step(a)
        ours.step(a)
        raw_q.append(raw.env.sim.data.qpos.copy())
        our_q.append(ours._data.qpos.copy())
    # Compare the simulator state itself: robosuite's observables are sampled part-way through a step.
    np.testing.assert_array_equal(np.array(our_q), np.array(raw_q))
    assert np.abs(np.array(raw_q[-1]) - np.array(raw_q[0])).max() > 0.01, "the arm should have moved"
    raw.close()
    ours.close()
