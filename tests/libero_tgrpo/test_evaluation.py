"""Benchmark evaluation and rollout videos on the real env."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import tgrpo
from libero_gym import STATE_LAYOUT, WARMUP_ACTION
from libero_tgrpo.envs import SharedPlacementVectorWrapper, env_id, make_eval_envs, make_train_envs
from libero_tgrpo.evaluation import evaluate_benchmark, record_video
from rewards import StagedRewardWrapper


@pytest.fixture(scope="module")
def policy():
    return tgrpo.MLPTokenPolicy(29, obs_keys=("state",), hidden=(16,), seed=0)


class ReachPolicy:
    """A scripted token policy: moves the end effector straight toward the target at ``speed``, gripper open.

    It records the ``"state"`` observations it is given, one [num_envs, 29] array per call.
    """

    def __init__(self, speed=1.0):
        self.speed = speed
        self.tokenizer = tgrpo.ActionTokenizer()
        self.seen = []

    def sample(self, obs, instructions, temperature=0.0):
        state = np.asarray(obs["state"])
        self.seen.append(state.copy())
        delta = state[:, STATE_LAYOUT["target_minus_eef"]]
        actions = np.zeros((len(state), 7))
        actions[:, :3] = self.speed * delta / np.linalg.norm(delta, axis=1, keepdims=True)
        actions[:, 6] = -1
        tokens = torch.as_tensor(self.tokenizer.encode(actions))
        return tokens, torch.zeros(tokens.shape)

    def tokens_to_actions(self, tokens):
        return self.tokenizer.decode(tokens)


def _max_stage_alone(state, steps):
    """Largest staged-reward stage of ReachPolicy from benchmark state ``state`` in one plain env."""
    env = StagedRewardWrapper(gym.make(env_id(4), obs_mode="state"))
    reach = ReachPolicy()
    obs, info = env.reset(options={"init_state": state})
    stages = [info["stage"]]
    for _ in range(steps):
        tokens, _ = reach.sample({"state": obs["state"][None]}, [""])
        obs, _, _, _, info = env.step(reach.tokens_to_actions(tokens)[0].astype(np.float32))
        stages.append(info["stage"])
    env.close()
    return max(stages)


def test_eval_records_match_each_state_run_alone():
    # Moving at full speed, the end effector comes within approach_distance (stage 1) of the bbq sauce
    # within 9 steps from state 21 (and 0), not from state 9, which starts 3 cm farther away.
    states, steps = [9, 21, 0], 9
    alone = {k: _max_stage_alone(k, steps) for k in states}
    assert len(set(alone.values())) > 1, f"the states should be told apart by their stages: {alone}"
    envs = make_eval_envs(4, 2, max_episode_steps=steps)
    try:
        res = evaluate_benchmark(envs, ReachPolicy(), states, max_steps=steps, progress=False)
    finally:
        envs.close()
    assert [e["init_state"] for e in res["episodes"]] == states
    for e in res["episodes"]:
        assert set(e) == {"init_state", "success", "placed", "length", "max_stage"}
        assert e["length"] == steps and e["success"] is False and e["placed"] is False
        assert e["max_stage"] == alone[e["init_state"]], (e, alone)
    s = res["summary"]
    assert s["episodes"] == 3 and s["successes"] == 0 and s["success_rate"] == 0.0 and s["mean_length"] == steps
    assert s["mean_max_stage"] == np.mean(list(alone.values()))
    assert res["env_steps"] == 3 * steps and res["max_steps"] == steps and res["temperature"] == 0.0
    assert res["steps_per_s"] > 0


def _libero_first_state(state):
    """Task4's first observation from benchmark state ``state`` in LIBERO's own env after the same warm-up."""
    import contextlib
    import io
    import os

    import mujoco
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    with contextlib.redirect_stdout(io.StringIO()):
        suite = benchmark.get_benchmark_dict()["libero_object"]()
        t = suite.get_task(3)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        raw = OffScreenRenderEnv(bddl_file_name=bddl, has_offscreen_renderer=False, use_camera_obs=False)
        raw.seed(0)
        raw.reset()
        raw.set_init_state(suite.get_task_init_states(3)[state])
        for _ in range(10):
            raw.step(WARMUP_ACTION)
    env = raw.env
    data, robot = env.sim.data, env.robots[0]
    target, basket = env.obj_body_id[env.obj_of_interest[0]], env.obj_body_id[env.obj_of_interest[1]]
    eef_quat = np.empty(4)
    mujoco.mju_mat2Quat(eef_quat, data.site_xmat[robot.eef_site_id])
    first = {
        "eef_pos": data.site_xpos[robot.eef_site_id].copy(),
        "eef_quat": eef_quat,
        "gripper_qpos": data.qpos[robot._ref_gripper_joint_pos_indexes].copy(),
        "target_pos": data.body_xpos[target].copy(),
        "basket_pos": data.body_xpos[basket].copy(),
    }
    raw.close()
    return first


def _assert_state_is(obs_state, first, what):
    for key, value in first.items():
        np.testing.assert_allclose(obs_state[STATE_LAYOUT[key]], value, atol=1e-5, err_msg=f"{what}: {key}")


def test_eval_episodes_start_from_the_requested_benchmark_states_deterministically():
    steps = 5
    envs = make_eval_envs(4, 2, max_episode_steps=steps)
    try:
        a, b = ReachPolicy(), ReachPolicy()
        evaluate_benchmark(envs, a, [3, 7, 9], max_steps=steps, progress=False)
        evaluate_benchmark(envs, b, [9, 3], max_steps=steps, progress=False)
    finally:
        envs.close()
    # Run a: sub-envs 0 and 1 start on states 3 and 7; both end after 5 steps, sub-env 0 is sent to state 9,
    # its step 6 is the reset step, and the policy's 7th call sees the new episode's first observation.
    first_seen = {3: a.seen[0][0], 7: a.seen[0][1], 9: a.seen[steps + 1][0]}
    for k, obs_state in first_seen.items():
        _assert_state_is(obs_state, _libero_first_state(k), f"benchmark state {k}")
    assert not np.allclose(first_seen[3], first_seen[7])
    # Run b, states in another order: state 3 now runs on sub-env 1 and gives the same observations.
    episode_3_in_a = np.stack([s[0] for s in a.seen[:steps]])
    episode_3_in_b = np.stack([s[1] for s in b.seen[:steps]])
    np.testing.assert_array_equal(episode_3_in_b, episode_3_in_a)
    np.testing.assert_array_equal(b.seen[0][0], first_seen[9])


def _first_obs_of_placement(seed):
    env = gym.make(env_id(4), obs_mode="state")
    try:
        obs, _ = env.reset(seed=123, options={"placement_seed": seed})
    finally:
        env.close()
    return obs["state"]


def test_eval_on_placement_seeds_starts_each_episode_on_its_placement():
    # Held-out tuning evaluates on seeded training placements: every episode must start on the scene of its
    # placement seed (not on a benchmark state, not on a placement drawn from the sub-env's RNG).
    steps, seeds = 5, [8_000_000, 8_000_001, 8_000_002]
    envs = make_eval_envs(4, 2, max_episode_steps=steps)
    try:
        a = ReachPolicy()
        res = evaluate_benchmark(envs, a, placement_seeds=seeds, max_steps=steps, progress=False)
    finally:
        envs.close()
    assert [e["placement_seed"] for e in res["episodes"]] == seeds
    assert all(e["init_state"] is None and e["length"] == steps for e in res["episodes"])
    # sub-envs 0 and 1 start on the first two placements; sub-env 0 then gets the third (see the test above)
    first_seen = {seeds[0]: a.seen[0][0], seeds[1]: a.seen[0][1], seeds[2]: a.seen[steps + 1][0]}
    alone = {s: _first_obs_of_placement(s) for s in seeds}
    for s in seeds:
        np.testing.assert_allclose(first_seen[s], alone[s], atol=1e-6, err_msg=f"placement seed {s}")
    assert not np.allclose(alone[seeds[0]], alone[seeds[1]])
    assert not np.allclose(alone[seeds[0]], alone[seeds[2]])


def test_placement_seeds_and_states_are_exclusive(policy):
    with pytest.raises(ValueError, match="not both"):
        evaluate_benchmark(None, policy, [0], placement_seeds=[1])
    with pytest.raises(ValueError, match="placement_seeds=\\[-1\\]"):
        evaluate_benchmark(None, policy, placement_seeds=[-1])


def test_bad_states_are_rejected(policy):
    with pytest.raises(ValueError, match="0-49"):
        evaluate_benchmark(None, policy, [50])


def test_shared_placement_wrapper_gives_one_scene_per_group():
    envs = make_train_envs(4, 2, vectorization="sync")
    try:
        obs, info = envs.reset(seed=5)
        np.testing.assert_allclose(obs["state"][0], obs["state"][1])
        assert (info["init_state"] == -1).all()  # a training placement, not a benchmark state
        obs2, _ = envs.reset(seed=6)
        assert not np.allclose(obs["state"][0], obs2["state"][0])
        assert isinstance(envs.env, SharedPlacementVectorWrapper)
    finally:
        envs.close()


def test_record_video(policy, tmp_path):
    pytest.importorskip("imageio", exc_type=ModuleNotFoundError)
    out = record_video(policy, 4, tmp_path / "v.mp4", init_state=2, max_steps=4, render_size=64)
    assert (tmp_path / "v.mp4").stat().st_size > 0
    assert out["frames"] == 5 and out["length"] == 4 and out["init_state"] == 2
