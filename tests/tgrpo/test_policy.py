"""The token-action policy protocol and the built-in MLP policy."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tgrpo_fakes import make_vec_env

from tgrpo.policy import MLPTokenPolicy, TokenActionPolicy, flatten_observation
from tgrpo.tokenizer import ActionTokenizer


@pytest.fixture
def policy():
    return MLPTokenPolicy(obs_dim=5, seed=0)


def test_implements_protocol(policy):
    assert isinstance(policy, TokenActionPolicy)


def test_sample_shapes_and_log_probs_agree(policy):
    obs = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
    tokens, logp = policy.sample(obs, ["task"] * 4, temperature=1.0)
    assert tokens.shape == (4, 7) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) <= 255
    assert not logp.requires_grad
    lp, ent = policy.log_probs(obs, ["task"] * 4, tokens, temperature=1.0)
    assert lp.requires_grad and ent.shape == (4, 7)
    torch.testing.assert_close(lp.detach(), logp)
    # a near-uniform initial distribution: entropy close to log(256)
    assert float(ent.detach().mean()) == pytest.approx(np.log(256), rel=0.02)


def test_temperature_and_greedy(policy):
    obs = np.ones((3, 5), np.float32)
    t1, _ = policy.sample(obs, [""] * 3, temperature=0.0)
    t2, lp = policy.sample(obs, [""] * 3, temperature=0.0)
    assert torch.equal(t1, t2) and torch.all(lp == 0)
    ent_hot = policy.log_probs(obs, [""] * 3, t1, temperature=2.0)[1].detach()
    ent_cold = policy.log_probs(obs, [""] * 3, t1, temperature=0.05)[1].detach()
    assert float(ent_hot.mean()) > float(ent_cold.mean())


def test_reference_stays_frozen_while_policy_moves(policy):
    torch.manual_seed(0)
    obs = np.ones((2, 5), np.float32)
    tokens, _ = policy.sample(obs, ["", ""])
    ref_before = policy.ref_log_probs(obs, ["", ""], tokens)
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1e-3)
    lp, _ = policy.log_probs(obs, ["", ""], tokens)
    (-lp.sum()).backward()
    opt.step()
    lp_after, _ = policy.log_probs(obs, ["", ""], tokens)
    assert float(lp_after.detach().sum()) > float(ref_before.sum()) + 1e-3
    torch.testing.assert_close(policy.ref_log_probs(obs, ["", ""], tokens), ref_before)
    ref_ids = {id(p) for p in policy.ref.parameters()}
    assert not any(id(p) in ref_ids for p in policy.trainable_parameters())


def test_tokens_to_actions_in_range(policy):
    acts = policy.tokens_to_actions(torch.tensor([[0, 127, 255, 1, 2, 3, 4]]))
    assert acts.shape == (1, 7) and acts.dtype == np.float32
    assert np.all(np.abs(acts) <= 1.0)


def test_from_space_box_and_dict():
    p = MLPTokenPolicy.from_space(spaces.Box(-1, 1, (3, 2)))
    assert p.obs_dim == 6
    d = spaces.Dict({"state": spaces.Box(-1, 1, (4,)), "agentview": spaces.Box(0, 255, (8, 8, 3), np.uint8)})
    p = MLPTokenPolicy.from_space(d)
    assert p.obs_dim == 4
    tokens, _ = p.sample(
        {"state": np.zeros((2, 4), np.float32), "agentview": np.zeros((2, 8, 8, 3))}, ["", ""]
    )
    assert tokens.shape == (2, 7)
    envs = make_vec_env(2, dict_obs=True)
    p = MLPTokenPolicy.from_space(envs.single_observation_space)
    obs, _ = envs.reset(seed=0)
    assert p.sample(obs, ["", ""])[0].shape == (2, 7)


def test_wrong_observation_size_is_reported(policy):
    with pytest.raises(ValueError, match="expects 5"):
        policy.sample(np.zeros((2, 4), np.float32), ["", ""])
    with pytest.raises(ValueError, match="not found"):
        flatten_observation({"rgb": np.zeros((2, 3))}, keys=("state",))


def test_seeded_construction_is_reproducible():
    a, b = MLPTokenPolicy(5, seed=3), MLPTokenPolicy(5, seed=3)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)


def test_tokenizer_with_other_bin_count_is_rejected():
    with pytest.raises(ValueError, match="n_bins=64 but the policy has n_bins=256"):
        MLPTokenPolicy(29, tokenizer=ActionTokenizer(n_bins=64))
