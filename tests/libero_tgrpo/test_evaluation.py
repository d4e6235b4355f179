"""Benchmark evaluation and rollout videos on the real env."""

import numpy as np
import pytest

import tgrpo
from libero_tgrpo.envs import SharedPlacementVectorWrapper, make_eval_envs, make_train_envs
from libero_tgrpo.evaluation import evaluate_benchmark, record_video


@pytest.fixture(scope="module")
def policy():
    return tgrpo.MLPTokenPolicy(29, obs_keys=("state",), hidden=(16,), seed=0)


def test_eval_on_two_benchmark_states(policy):
    envs = make_eval_envs(4, 2, max_episode_steps=15)
    try:
        res = evaluate_benchmark(envs, policy, [3, 7, 9], max_steps=15, progress=False)
    finally:
        envs.close()
    assert [e["init_state"] for e in res["episodes"]] == [3, 7, 9]
    for e in res["episodes"]:
        assert set(e) == {"init_state", "success", "placed", "length", "max_stage"}
        assert e["length"] == 15 and e["success"] is False and e["placed"] is False and 0 <= e["max_stage"] <= 4
    s = res["summary"]
    assert s["episodes"] == 3 and s["successes"] == 0 and s["success_rate"] == 0.0 and s["mean_length"] == 15
    assert res["env_steps"] == 45 and res["max_steps"] == 15 and res["temperature"] == 0.0
    assert res["steps_per_s"] > 0


def test_eval_is_deterministic_and_starts_from_the_benchmark_states(policy):
    envs = make_eval_envs(4, 2, max_episode_steps=5, vectorization="sync")
    try:
        a = evaluate_benchmark(envs, policy, [0, 1], max_steps=5, progress=False)
        b = evaluate_benchmark(envs, policy, [1, 0], max_steps=5, progress=False)
    finally:
        envs.close()
    assert [e["init_state"] for e in b["episodes"]] == [1, 0]
    assert a["episodes"][0]["max_stage"] == b["episodes"][1]["max_stage"]


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
