"""HFVLAPolicy's KL reference after SFT, its PEFT-format checkpoints and the recomputed old log-probs.

On a tiny LLaVA built from a config (no download).
"""

import pytest
import torch
from tgrpo_fakes import small_config
from tgrpo_vision_fakes import INSTRUCTIONS, make_camera_vec_env, random_obs

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

import tgrpo  # noqa: E402
from tgrpo.policies import HFVLAPolicy, LoRASettings, save_tiny_llava  # noqa: E402

INSTR = [INSTRUCTIONS[0], INSTRUCTIONS[1]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_vla"))


def _fresh(model_dir, **kw):
    return HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8), **kw)


def _sft(policy, obs, tokens, steps=5):
    """A few steps of behaviour cloning on fixed tokens (what libero_tgrpo.sft does)."""
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=1e-2)
    for _ in range(steps):
        lp, _ = policy.log_probs(obs, INSTR, tokens)
        opt.zero_grad()
        (-lp.mean()).backward()
        opt.step()


def _adapter(policy, name):
    return {n: p.detach().clone() for n, p in policy.model.named_parameters() if f".{name}." in n}


def test_reference_is_the_sft_policy_after_sft_and_stays_fixed_during_rl(tmp_path, model_dir):
    policy = _fresh(model_dir)
    env = make_camera_vec_env(2, size=32, state_dim=0)
    obs, _ = env.reset(seed=0)
    tokens = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    assert policy.reference == "base"
    _sft(policy, obs, tokens)
    sft_lp = policy.log_probs(obs, INSTR, tokens)[0].detach()
    assert not torch.allclose(policy.ref_log_probs(obs, INSTR, tokens), sft_lp)  # base != SFT policy

    policy.reset_reference()
    assert policy.reference == "adapter"
    torch.testing.assert_close(policy.ref_log_probs(obs, INSTR, tokens), sft_lp, atol=0, rtol=0)
    trainable = {id(p) for p in policy.trainable_parameters()}
    assert trainable and not trainable & {id(p) for p in _adapter_params(policy, "reference")}

    ref_before = _adapter(policy, "reference")
    live_before = _adapter(policy, "default")
    tgrpo.train(env, policy, small_config(tmp_path, iterations=2, max_steps=2, lr=1e-2, kl_beta=0.04))
    live_after = _adapter(policy, "default")
    assert any(not torch.equal(live_before[k], live_after[k]) for k in live_before)  # RL moved the policy
    ref_after = _adapter(policy, "reference")
    assert all(torch.equal(ref_before[k], ref_after[k]) for k in ref_before)
    torch.testing.assert_close(policy.ref_log_probs(obs, INSTR, tokens), sft_lp, atol=0, rtol=0)
    assert not torch.allclose(policy.log_probs(obs, INSTR, tokens)[0].detach(), sft_lp)
    # switching adapters for the reference leaves exactly the trained adapter trainable
    assert {id(p) for p in policy.trainable_parameters()} == trainable


def _adapter_params(policy, name):
    return [p for n, p in policy.model.named_parameters() if f".{name}." in n]


def test_a_loaded_sft_adapter_is_the_reference(tmp_path, model_dir):
    policy = _fresh(model_dir)
    obs, tokens = random_obs(2, size=32), torch.randint(0, 256, (2, 7))
    _sft(policy, obs, tokens)
    sft_lp = policy.log_probs(obs, INSTR, tokens)[0].detach()
    policy.save_pretrained(tmp_path / "sft_adapter")  # an SFT LoRA written without a reference
    loaded = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", adapter_path=tmp_path / "sft_adapter")
    assert loaded.reference == "adapter"
    torch.testing.assert_close(loaded.ref_log_probs(obs, INSTR, tokens), sft_lp)
    torch.testing.assert_close(loaded.log_probs(obs, INSTR, tokens)[0].detach(), sft_lp)


def test_state_dict_carries_the_reference_and_refuses_to_drop_it(model_dir):
    policy = _fresh(model_dir)
    obs, tokens = random_obs(2, size=32), torch.randint(0, 256, (2, 7))
    _sft(policy, obs, tokens)
    policy.reset_reference()
    state = policy.state_dict()
    assert any(k.startswith("reference/") for k in state) and all("lora_" in k for k in state)
    fresh = _fresh(model_dir)
    fresh.load_state_dict(state)
    assert fresh.reference == "adapter"
    torch.testing.assert_close(fresh.ref_log_probs(obs, INSTR, tokens), policy.ref_log_probs(obs, INSTR, tokens))
    without = {k: v for k, v in state.items() if not k.startswith("reference/")}
    with pytest.raises(ValueError, match="no reference adapter"):
        fresh.load_state_dict(without)


def test_adapter_checkpoints_are_peft_files_that_load_and_resume(tmp_path, model_dir):
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    policy = _fresh(model_dir)
    env = make_camera_vec_env(2, size=32, state_dim=0)
    obs, _ = env.reset(seed=0)
    tokens = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(1))
    _sft(policy, obs, tokens)
    policy.reset_reference()
    cfg = small_config(tmp_path, iterations=1, max_steps=2, lr=1e-2, checkpoint_interval=1)
    tgrpo.train(env, policy, cfg)
    adapter = tmp_path / "run" / "adapter"
    names = sorted(p.relative_to(adapter).as_posix() for p in adapter.rglob("*") if p.is_file())
    assert "adapter_model.safetensors" in names and "adapter_config.json" in names
    assert "reference/adapter_model.safetensors" in names
    assert not [n for n in names if n.endswith((".bin", ".pt"))]
    written = sum(p.stat().st_size for p in adapter.rglob("*") if p.is_file())
    base = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    lora = sum(p.numel() * 4 for p in policy.trainable_parameters())
    assert written < 3 * lora + 20_000 < base  # two adapters and their configs, no copy of the base model
    lp_after = policy.log_probs(obs, INSTR, tokens)[0].detach()

    base_model = LlavaForConditionalGeneration.from_pretrained(model_dir)  # float32, as saved
    peft_model = PeftModel.from_pretrained(base_model, str(adapter))
    sd = {n: p for n, p in peft_model.named_parameters() if "lora_" in n}
    live = {n: p for n, p in policy.model.named_parameters() if ".default." in n}
    assert sd.keys() == live.keys() and all(torch.equal(sd[k], live[k]) for k in sd)

    again = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", adapter_path=adapter)
    torch.testing.assert_close(again.log_probs(obs, INSTR, tokens)[0].detach(), lp_after)
    torch.testing.assert_close(again.ref_log_probs(obs, INSTR, tokens), policy.ref_log_probs(obs, INSTR, tokens))
    # resume: the run continues at iteration 1 from its checkpoint, and the adapter files follow
    before = (adapter / "adapter_model.safetensors").read_bytes()
    result = tgrpo.train(env, again, small_config(tmp_path, iterations=2, max_steps=2, lr=1e-2, resume=True))
    assert [row["iteration"] for row in result.history] == [0, 1]
    assert (adapter / "adapter_model.safetensors").read_bytes() != before


@pytest.mark.parametrize("recompute", [True, False])
def test_recomputed_old_log_probs_equal_the_update_forward(model_dir, recompute):
    policy = HFVLAPolicy.from_pretrained(
        model_dir, dtype="bfloat16", use_cache=True, recompute_old_log_probs=recompute
    )
    mixed = [INSTRUCTIONS[0], INSTRUCTIONS[1], "pick up the ketchup", INSTRUCTIONS[0]]  # unequal prompt lengths
    obs = random_obs(4, size=32)
    torch.manual_seed(0)
    tokens, old = policy.sample(obs, mixed)
    lp, _ = policy.log_probs(obs, mixed, tokens)  # with grad, as in the update
    # on: bit for bit; off: the cached bf16 decoding rounds differently from the teacher-forced forward
    assert torch.equal(lp.detach().cpu(), old) == recompute


def test_first_ratio_is_exactly_one_with_recomputed_old_log_probs(tmp_path, model_dir, monkeypatch):
    import tgrpo.trainer

    ratios = []
    loss = tgrpo.trainer.tgrpo_loss

    def watched(logp, old_logp, *args, **kwargs):  # the real loss; records the ratio it is given
        ratios.append(torch.exp(logp.detach() - old_logp))
        return loss(logp, old_logp, *args, **kwargs)

    monkeypatch.setattr(tgrpo.trainer, "tgrpo_loss", watched)
    policy = HFVLAPolicy.from_pretrained(
        model_dir, dtype="bfloat16", gradient_checkpointing=True, recompute_old_log_probs=True
    )
    env = make_camera_vec_env(2, size=32, state_dim=0)
    torch.manual_seed(0)
    cfg = small_config(tmp_path, iterations=1, max_steps=3, lr=1e-3, kl_beta=0.0, update_schedule="per_step")
    row = tgrpo.train(env, policy, cfg).history[0]
    assert row["losses/optimizer_steps"] == 3 and len(ratios) == 3
    assert ratios[0].shape == (2, 7) and bool(torch.all(ratios[0] == 1.0))

