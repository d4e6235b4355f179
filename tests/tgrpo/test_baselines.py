"""The PPO baseline: GAE on hand-computed values, and PPO learning the staged task."""

import numpy as np
import pytest
import torch
from tgrpo_fakes import make_vec_env

import tgrpo
from tgrpo.baselines import PPOConfig, ValueMLP, gae, train_ppo
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
