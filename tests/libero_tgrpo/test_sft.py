"""Behaviour cloning on real expert demonstrations."""

import pytest
import torch

import tgrpo
from libero_tgrpo.sft import SFTConfig, freeze_reference, sft, token_cross_entropy


def test_sft_lowers_the_token_cross_entropy(demos):
    policy = tgrpo.MLPTokenPolicy(29, obs_keys=("state",), hidden=(64, 64), seed=0)
    before = token_cross_entropy(policy, demos)
    history = sft(policy, demos, SFTConfig(epochs=5, lr=3e-3, batch_size=64), progress=False)
    after = token_cross_entropy(policy, demos)
    assert len(history) == 5
    assert before == pytest.approx(5.545, abs=0.05)  # near-uniform over 256 bins: log(256)
    assert after < 0.5 * before
    assert history[-1]["loss"] < history[0]["loss"]
    assert 0 <= history[-1]["token_accuracy"] <= 1


def test_freeze_reference_makes_the_sft_policy_the_kl_reference(demos):
    policy = tgrpo.MLPTokenPolicy(29, obs_keys=("state",), hidden=(32,), seed=0)
    sft(policy, demos, SFTConfig(epochs=1), progress=False)
    obs = {"state": demos.obs["state"][:8]}
    tokens = torch.as_tensor(demos.tokens[:8])
    live, _ = policy.log_probs(obs, [""] * 8, tokens)
    assert not torch.allclose(policy.ref_log_probs(obs, [""] * 8, tokens), live)
    assert freeze_reference(policy)
    torch.testing.assert_close(policy.ref_log_probs(obs, [""] * 8, tokens), live.detach())
    assert not any(p.requires_grad for p in policy.ref.parameters())


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", -1), ("lr", 0.0), ("lr", float("nan"))])
def test_bad_config(field, value):
    with pytest.raises(ValueError, match=f"SFTConfig.{field}"):
        SFTConfig(**{field: value})
