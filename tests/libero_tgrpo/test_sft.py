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


def test_freeze_reference_refuses_a_policy_it_cannot_set():
    class NoReference:
        pass

    with pytest.raises(TypeError, match="NoReference has no reset_reference"):
        freeze_reference(NoReference())


def test_freeze_reference_makes_the_sft_lora_the_reference_of_an_hf_policy(tmp_path):
    pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)
    import numpy as np

    from libero_tgrpo.policies import build_policy
    from tgrpo.policies import save_tiny_llava

    path = save_tiny_llava(tmp_path / "tiny")
    policy, spec = build_policy(str(path), None, dtype="float32", lora_r=4, lora_alpha=8, device="cpu")
    assert spec["lora_r"] == 4 and policy.model.peft_config["default"].r == 4
    obs = {"agentview": np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)}
    instr, tokens = ["pick up the milk"] * 2, torch.randint(0, 256, (2, 7))
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    for _ in range(3):  # a few SFT steps
        opt.zero_grad()
        (-policy.log_probs(obs, instr, tokens)[0].mean()).backward()
        opt.step()
    live = policy.log_probs(obs, instr, tokens)[0].detach()
    assert not torch.allclose(policy.ref_log_probs(obs, instr, tokens), live)  # still the base model
    assert freeze_reference(policy)
    torch.testing.assert_close(policy.ref_log_probs(obs, instr, tokens), live, atol=0, rtol=0)
