"""Training that cannot silently drift: the target-KL early stop and the adaptive KL weight."""

import numpy as np
import pytest
from tgrpo_fakes import make_vec_env, small_config

import tgrpo
from tgrpo.kl_control import KL_BETA_BOUNDS, TARGET_KL_STOP_FACTOR, adapt_kl_beta, kl_too_far


def test_kl_too_far_rule():
    assert TARGET_KL_STOP_FACTOR == 1.5
    assert not kl_too_far(0.15, 0.1) and kl_too_far(0.1501, 0.1)
    assert kl_too_far(float("nan"), 0.1) and kl_too_far(float("inf"), 0.1)
    assert not kl_too_far(1e9, None)


def test_adapt_kl_beta_rule():
    assert adapt_kl_beta(0.04, 0.2, 0.1) == pytest.approx(0.08)  # above 1.5 x target: doubled
    assert adapt_kl_beta(0.04, 0.06, 0.1) == pytest.approx(0.02)  # below target / 1.5: halved
    assert adapt_kl_beta(0.04, 0.1, 0.1) == 0.04  # on target: kept
    assert adapt_kl_beta(0.04, 1e9, None) == 0.04  # off
    assert adapt_kl_beta(KL_BETA_BOUNDS[1], 10.0, 0.1) == KL_BETA_BOUNDS[1]
    assert adapt_kl_beta(KL_BETA_BOUNDS[0], 0.0, 0.1) == KL_BETA_BOUNDS[0]
    assert adapt_kl_beta(0.04, float("nan"), 0.1) == pytest.approx(0.08)


def _run(tmp_path, name, **overrides):
    envs = make_vec_env(4, threshold=0.5)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    cfg = small_config(tmp_path / name, iterations=3, lr=0.05, seed=0, **overrides)
    return tgrpo.train(envs, policy, cfg).history


def test_target_kl_stops_the_updates_of_an_iteration_before_the_policy_moves_too_far(tmp_path):
    target = 0.02
    free = _run(tmp_path, "free")
    # without the control, lr 0.05 moves the policy far from the rollout policy within one iteration
    assert max(r["losses/approx_kl"] for r in free) > 3 * TARGET_KL_STOP_FACTOR * target
    assert all(r["losses/optimizer_steps"] == r["charts/group_length"] for r in free)
    assert all(r["losses/early_stop"] == 0.0 for r in free)
    held = _run(tmp_path, "held", target_kl=target)
    # every applied step started within 1.5 x target of the rollout policy (the logged KL is their mean)
    assert all(r["losses/approx_kl"] <= TARGET_KL_STOP_FACTOR * target for r in held)
    stopped = [r for r in held if r["losses/early_stop"] == 1.0]
    assert stopped and all(1 <= r["losses/optimizer_steps"] < r["charts/group_length"] for r in stopped)
    assert held[-1]["charts/optimizer_steps"] == sum(r["losses/optimizer_steps"] for r in held)


def test_target_kl_in_the_minibatch_schedule(tmp_path):
    held = _run(tmp_path, "mb", target_kl=0.01, update_schedule="minibatch", epochs=4, minibatch_size=8)
    assert all(r["losses/approx_kl"] <= TARGET_KL_STOP_FACTOR * 0.01 for r in held)
    assert any(r["losses/early_stop"] == 1.0 for r in held)


def test_adaptive_beta_follows_the_kl_to_the_reference(tmp_path):
    up = _run(tmp_path, "up", kl_beta=0.04, target_ref_kl=1e-6)  # any drift is above target
    np.testing.assert_allclose([r["losses/kl_beta"] for r in up], [0.04, 0.08, 0.16])
    down = _run(tmp_path, "down", kl_beta=0.04, target_ref_kl=1e12)  # above the largest k3 estimate, 7 x exp(20)
    np.testing.assert_allclose([r["losses/kl_beta"] for r in down], [0.04, 0.02, 0.01])
    fixed = _run(tmp_path, "fixed", kl_beta=0.04)
    assert [r["losses/kl_beta"] for r in fixed] == [0.04] * 3


def test_adaptive_beta_survives_a_resume(tmp_path):
    envs = make_vec_env(4, threshold=0.5)
    kw = dict(lr=0.05, seed=0, kl_beta=0.04, target_ref_kl=1e-6)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    tgrpo.train(envs, policy, small_config(tmp_path, iterations=2, **kw))
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    resumed = tgrpo.train(envs, policy, small_config(tmp_path, iterations=3, resume=True, **kw))
    assert resumed.history[-1]["iteration"] == 2
    assert resumed.history[-1]["losses/kl_beta"] == pytest.approx(0.16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(target_kl=0.0), "target_kl=0.0"),
        (dict(target_kl=float("nan")), "target_kl=nan"),
        (dict(target_ref_kl=-1.0), "target_ref_kl=-1.0"),
        (dict(target_ref_kl=1.0, kl_beta=0.0), "kl_beta > 0"),
    ],
)
def test_bad_targets_are_rejected(kwargs, match):
    with pytest.raises(tgrpo.ConfigError, match=match):
        tgrpo.TGRPOConfig(**kwargs)
