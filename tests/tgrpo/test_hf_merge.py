"""Merged sampling (tgrpo.policies.hf_merge): the adapter folded into the base weights while sampling, on a tiny
LLaVA and the tiny OpenVLA-layout model built from configs (no download)."""

import pytest
import torch
from tgrpo_vision_fakes import INSTRUCTIONS, random_obs

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

from tgrpo.policies import HFVLAPolicy, LoRASettings, save_tiny_llava, save_tiny_openvla  # noqa: E402
from tgrpo.policies.hf_merge import MergedWeights  # noqa: E402

ROWS = [INSTRUCTIONS[0], INSTRUCTIONS[1], INSTRUCTIONS[0], "pick up the ketchup"]  # unequal prompt lengths


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_vla"))


@pytest.fixture(scope="module")
def openvla_dir(tmp_path_factory):
    return save_tiny_openvla(tmp_path_factory.mktemp("tiny_openvla"))


def _trained(policy):
    """Give the adapter weights that change the policy (a fresh adapter has B = 0: merging would change nothing)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n and ".default." in n:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return policy


def _base_weights(policy):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if "lora_" not in n}


def _decode(policy, obs):
    greedy = policy.sample(obs, ROWS, temperature=0.0)
    torch.manual_seed(7)
    sampled = policy.sample(obs, ROWS, temperature=1.0)
    return [*greedy, *sampled]


@pytest.mark.parametrize("static_cache", [False, True])
def test_merged_sampling_decodes_as_the_adapter_and_restores_the_base_weights_exactly(llava_dir, static_cache):
    """Same greedy tokens, same sampled tokens and log-probs under one seed as the unmerged adapter; afterwards
    every base weight is bit-identical to before and the update's log-probs are those of the unmerged policy."""
    import inspect

    import transformers

    plain = _trained(HFVLAPolicy.from_pretrained(llava_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8)))
    kw = {"dtype": "float32", "lora": LoRASettings(r=4, alpha=8), "merged_sampling": True, "static_cache": static_cache}
    forward = type(plain.model.get_base_model()).forward
    if static_cache and transformers.__version__.startswith("4.") and "cache_position" not in inspect.signature(
        forward
    ).parameters:
        # LLaVA of transformers 4.40 cannot place a step in a static cache: refused when the policy is built
        with pytest.raises(ValueError, match="takes no cache_position"):
            HFVLAPolicy.from_pretrained(llava_dir, **kw)
        return
    merged = HFVLAPolicy.from_pretrained(llava_dir, **kw)
    merged.load_state_dict(plain.state_dict())
    assert merged.merged_sampling and not plain.merged_sampling
    obs = random_obs(4, size=48, seed=2)
    before = _base_weights(merged)
    want = _decode(plain, obs)
    assert not torch.equal(want[0], _decode(_base_of(llava_dir), obs)[0])  # the adapter changes the greedy action
    got = _decode(merged, obs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    after = _base_weights(merged)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    lp_merged = merged.log_probs(obs, ROWS, got[2])[0]
    lp_plain = plain.log_probs(obs, ROWS, got[2])[0]
    torch.testing.assert_close(lp_merged, lp_plain, atol=1e-5, rtol=1e-5)
    assert lp_merged.requires_grad  # the update's forward runs through the adapter, not the merged weights


def _base_of(path):
    """The policy with a fresh adapter (B = 0): the base model's actions."""
    return HFVLAPolicy.from_pretrained(path, dtype="float32", lora=LoRASettings(r=4, alpha=8))


def test_merged_sampling_on_the_openvla_layout_with_a_reference_adapter(openvla_dir):
    """OpenVLA's layout (decoding steps through its language_model) with a frozen reference adapter beside the
    trained one: merged sampling merges the trained adapter only, and the reference log-probs are unchanged."""
    kw = {"trust_remote_code": True, "dtype": "float32", "unnorm_key": "libero_object"}
    plain = _trained(HFVLAPolicy.from_pretrained(openvla_dir, **kw))
    plain.reset_reference()
    _trained(plain)  # the trained adapter now differs from the reference
    merged = HFVLAPolicy.from_pretrained(openvla_dir, merged_sampling=True, **kw)
    merged.load_state_dict(plain.state_dict())
    assert merged.reference == "adapter"
    obs = random_obs(4, size=32, seed=5)
    for g, w in zip(_decode(merged, obs), _decode(plain, obs)):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    tokens = torch.randint(0, 256, (4, 7), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(merged.ref_log_probs(obs, ROWS, tokens), plain.ref_log_probs(obs, ROWS, tokens))


def test_a_failed_sampling_call_still_restores_the_base_weights(llava_dir):
    policy = _trained(HFVLAPolicy.from_pretrained(llava_dir, dtype="float32", merged_sampling=True))
    before = _base_weights(policy)
    with pytest.raises(ValueError, match="instructions"):
        policy.sample(random_obs(4, size=32), ROWS[:3])  # one instruction short: refused inside the merge
    merged = policy._merged
    own = [m.base_layer.weight.data_ptr() for m in merged.layers]
    with pytest.raises(RuntimeError, match="boom"), merged.active():
        assert [m.base_layer.weight.data_ptr() for m in merged.layers] == [w.data_ptr() for w in merged.merged]
        raise RuntimeError("boom")
    assert [m.base_layer.weight.data_ptr() for m in merged.layers] == own
    after = _base_weights(policy)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert merged.merged_bytes == sum(w.numel() * 4 for w in merged.merged)
    policy.set_decoding()
    assert policy._merged is None and not policy.merged_sampling


def test_merged_copies_are_made_once_per_change_of_the_adapter_or_base_weights(llava_dir):
    """Calls between two updates reuse the merged copies (one merge); an optimizer step that bypasses version
    counters (fused AdamW) or an in-place change of a base weight makes the next call merge again, and sampling
    then follows the changed policy."""
    kw = {"dtype": "float32", "lora": LoRASettings(r=4, alpha=8)}
    merged = _trained(HFVLAPolicy.from_pretrained(llava_dir, merged_sampling=True, **kw))
    plain = HFVLAPolicy.from_pretrained(llava_dir, **kw)
    obs = random_obs(4, size=48, seed=6)
    for _ in range(3):
        merged.sample(obs, ROWS, temperature=0.0)
    assert merged._merged.merges == 1
    opt = torch.optim.AdamW(merged.trainable_parameters(), lr=0.05, fused=True)
    versions = [p._version for p in merged.trainable_parameters()]
    lp, _ = merged.log_probs(obs, ROWS, merged.sample(obs, ROWS, temperature=0.0)[0])
    lp.sum().backward()
    opt.step()
    assert [p._version for p in merged.trainable_parameters()] == versions  # no version counter moved
    plain.load_state_dict(merged.state_dict())
    for g, w in zip(_decode(merged, obs), _decode(plain, obs)):
        torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)
    assert merged._merged.merges == 2
    layer = merged._merged.layers[0].base_layer
    with torch.no_grad():
        layer.weight.mul_(1.5)
    plain.load_state_dict(merged.state_dict())
    for g, w in zip(_decode(merged, obs), _decode(plain, obs)):  # larger activations: a looser rounding bound
        torch.testing.assert_close(g, w, atol=1e-3, rtol=1e-3)
    assert merged._merged.merges == 3


def test_merged_weights_refuses_a_model_without_lora_layers(llava_dir):
    from peft import PeftModel

    policy = HFVLAPolicy.from_pretrained(llava_dir, dtype="float32")
    assert isinstance(policy.model, PeftModel)
    with pytest.raises(ValueError, match="no LoRA layer with the adapter 'other'"):
        MergedWeights(policy.model, adapter="other")

