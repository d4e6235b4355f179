"""The PPO baseline: GAE on hand-computed values, and PPO learning the staged task."""

import numpy as np
import pytest
import torch
from tgrpo_fakes import make_vec_env

import tgrpo
from tgrpo.baselines import (
    VALUE_STD_FLOOR,
    PPOConfig,
    RunningMeanStd,
    ValueMLP,
    clip_gradients,
    gae,
    train_ppo,
)
from tgrpo.config import ConfigError


def test_gae_by_hand():
    # one trajectory of 2 steps then padding, gamma 0.5, lambda 1: returns-to-go minus values
    rewards = np.array([[1.0, 2.0, 0.0]])
    values = np.array([[0.5, 1.0, 0.0]])
    mask = np.array([[True, True, False]])
    adv, targets = gae(rewards, values, mask, gamma=0.5, lam=1.0)
    # G_1 = 2, G_0 = 1 + 0.5 * 2 = 2
    np.testing.assert_allclose(adv, [[2 - 0.5, 2 - 1.0, 0.0]])
    np.testing.assert_allclose(targets, [[2.0, 2.0, 0.0]])
    # lambda 0: one-step TD errors
    adv0, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    np.testing.assert_allclose(adv0, [[1 + 0.5 * 1.0 - 0.5, 2 - 1.0, 0.0]])


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\[M, L\]"):
        gae(np.zeros((2, 3)), np.zeros((2, 2)), np.ones((2, 3), bool))


def test_ppo_learns_staged_task(tmp_path):
    # success does not end the episode here, so a faster success earns a larger return
    envs = make_vec_env(8, threshold=0.6, success_terminates=False)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)

    def success():
        torch.manual_seed(99)
        return tgrpo.evaluate(envs, policy, episodes=64, max_steps=10, temperature=1.0, seed=123)[
            "success_rate"
        ]

    before = success()
    cfg = PPOConfig(
        iterations=10,
        max_steps=10,
        minibatch_size=64,
        epochs=2,
        lr=1e-2,
        gamma=0.9,
        output_dir=str(tmp_path),
        progress_bar=False,
        plot=False,
    )
    result = train_ppo(envs, policy, config=cfg)
    after = success()
    assert after >= before + 0.4, (before, after)
    assert "losses/value_loss" in result.history[0]
    assert isinstance(result.value_fn, ValueMLP)


def test_ppo_config_validation():
    with pytest.raises(ConfigError, match="gamma=1.5.*Fix"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="ratio_level"):
        PPOConfig(ratio_level="seq")


def _ppo(tmp_path, envs=None, **overrides):
    envs = envs or make_vec_env(4, threshold=0.6, success_terminates=False)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    kw = dict(iterations=3, max_steps=10, minibatch_size=16, epochs=2, lr=1e-2, gamma=0.9,
              output_dir=str(tmp_path), progress_bar=False, plot=False)
    kw.update(overrides)
    return train_ppo(envs, policy, config=PPOConfig(**kw))


def test_ppo_runs_are_the_same_whatever_the_process_drew_before(tmp_path):
    """The value head is initialised from the run's seed: a run after other random work gives the same weights."""
    first = _ppo(tmp_path / "a")
    torch.rand(1000)  # e.g. an earlier run or evaluation in the same process
    second = _ppo(tmp_path / "b")
    for a, b in ((first.value_fn, second.value_fn), (first.policy, second.policy)):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)


def test_running_mean_std_matches_the_statistics_of_everything_seen():
    rms = RunningMeanStd()
    batches = [np.array([1.0, 2.0, 3.0]), np.array([10.0]), np.arange(20.0)]
    for b in batches:
        rms.update(b)
    everything = np.concatenate(batches)
    assert rms.count == everything.size
    assert rms.mean == pytest.approx(everything.mean()) and rms.var == pytest.approx(everything.var())
    np.testing.assert_allclose(rms.normalize(everything), (everything - everything.mean()) / everything.std())
    np.testing.assert_allclose(rms.denormalize(rms.normalize(everything)), everything)
    flat = RunningMeanStd()
    flat.update(np.full(5, 7.0))
    assert flat.std == VALUE_STD_FLOOR and np.isfinite(flat.normalize(np.array([8.0]))).all()


def _grads(pi_norm, v_norm):
    pi, v = torch.zeros(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    pi.grad, v.grad = torch.full((4,), pi_norm / 2), torch.full((4,), v_norm / 2)
    return pi, v


def test_value_head_gradient_is_clipped_apart_from_the_policy():
    # a value gradient 10x the policy's: clipped together it shrinks the policy's step 100x
    pi, v = _grads(1.0, 100.0)
    gn, v_gn = clip_gradients([pi], [v], PPOConfig(max_grad_norm=1.0, value_max_grad_norm=0.5))
    assert float(gn) == pytest.approx(1.0) and float(v_gn) == pytest.approx(100.0)
    assert float(pi.grad.norm()) == pytest.approx(1.0)  # the policy's own norm is within its bound: untouched
    assert float(v.grad.norm()) == pytest.approx(0.5)
    pi, v = _grads(1.0, 100.0)
    clip_gradients([pi], [v], PPOConfig(max_grad_norm=1.0))  # the former joint clip, still the default
    assert float(pi.grad.norm()) == pytest.approx(1.0 / np.hypot(1.0, 100.0))


def test_value_targets_are_learned_normalised(tmp_path):
    plain = _ppo(tmp_path / "plain", iterations=1, gamma=1.0, max_steps=20)
    norm = _ppo(tmp_path / "norm", iterations=1, gamma=1.0, max_steps=20, normalize_value_targets=True)
    # returns of the staged fake reach ~40 in 20 steps: unnormalised, the value loss is in squared reward units
    assert plain.history[0]["losses/value_loss"] > 20.0
    assert norm.history[0]["losses/value_loss"] < 1.0
    assert norm.value_norm.count == norm.history[0]["charts/env_steps"]  # every valid step's target
    assert tgrpo.load_checkpoint(tmp_path / "norm" / "checkpoint.pt")["value_norm"]["count"] == norm.value_norm.count


def test_ppo_stops_at_its_env_step_budget_and_counts_optimizer_steps(tmp_path):
    result = _ppo(tmp_path, iterations=50, env_step_budget=100)
    steps = [r["charts/env_steps"] for r in result.history]
    assert steps[-1] >= 100 > steps[-2] and len(steps) < 50
    assert result.history[-1]["charts/optimizer_steps"] == sum(r["losses/optimizer_steps"] for r in result.history)
    assert tgrpo.load_checkpoint(tmp_path / "checkpoint.pt")["env_steps"] == steps[-1]


def test_ppo_target_kl_stops_the_iteration(tmp_path):
    result = _ppo(tmp_path, lr=0.05, epochs=4, target_kl=0.01)
    assert all(r["losses/approx_kl"] <= 1.5 * 0.01 for r in result.history)
    assert any(r["losses/early_stop"] == 1.0 for r in result.history)
