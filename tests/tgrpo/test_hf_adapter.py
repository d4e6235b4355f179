"""tgrpo.policies.hf: the Hugging Face VLA adapter, on a tiny LLaVA built from a config (no download)."""

import numpy as np
import pytest
import torch
from tgrpo_fakes import small_config
from tgrpo_vision_fakes import INSTRUCTIONS, make_camera_vec_env, random_obs

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

import tgrpo  # noqa: E402
from tgrpo.policies import HFVLAPolicy, LoRASettings, openvla_prompt, save_tiny_llava  # noqa: E402
from tgrpo.tokenizer import ActionTokenizer  # noqa: E402

MIXED = [INSTRUCTIONS[0], INSTRUCTIONS[1], "pick up the ketchup", INSTRUCTIONS[0]]  # unequal prompt lengths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_vla"))


@pytest.fixture
def policy(model_dir):
    return HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8))


def _lora_and_base(policy):
    named = dict(policy.model.named_parameters())
    lora = {k: v.detach().clone() for k, v in named.items() if "lora_" in k}
    base = {k: v.detach().clone() for k, v in named.items() if "lora_" not in k}
    return lora, base


def test_loads_through_from_pretrained_with_a_lora_adapter(policy):
    from peft import PeftModel

    assert isinstance(policy, tgrpo.TokenActionPolicy)
    assert isinstance(policy.model, PeftModel)
    trainable = dict((n, p) for n, p in policy.model.named_parameters() if p.requires_grad)
    assert trainable and all("lora_" in n for n in trainable)
    # "all-linear": every linear layer but the output head, on every peft version (0.11 kept a nested lm_head)
    assert not [n for n in trainable if "lm_head" in n]
    assert any("vision_tower" in n for n in trainable) and any("q_proj" in n for n in trainable)
    assert {id(p) for p in policy.trainable_parameters()} == {id(p) for p in trainable.values()}
    assert policy.vocab_size == policy.processor.tokenizer.vocab_size
    # the last 256 ids of the base vocabulary are the action tokens, id V - 1 - k
    tok = policy.processor.tokenizer
    assert tok.convert_ids_to_tokens(int(policy.tokenizer.to_vocab_ids(0, policy.vocab_size))) == "<action_0>"


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampled_tokens_are_valid_and_log_probs_match_recomputation(policy, use_cache):
    policy.use_cache = use_cache
    obs = random_obs(4, size=48)
    torch.manual_seed(0)
    tokens, logp = policy.sample(obs, MIXED, temperature=1.0)
    assert tokens.shape == (4, 7) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) <= 255
    assert not logp.requires_grad and torch.all(logp < 0)
    lp, ent = policy.log_probs(obs, MIXED, tokens, temperature=1.0)
    assert lp.requires_grad and ent.shape == (4, 7)
    torch.testing.assert_close(lp.detach().cpu(), logp, atol=1e-4, rtol=1e-4)
    ref = policy.ref_log_probs(obs, MIXED, tokens, temperature=1.0)  # fresh adapter: B = 0
    torch.testing.assert_close(ref.cpu(), logp, atol=1e-4, rtol=1e-4)
    lp_hot, _ = policy.log_probs(obs, MIXED, tokens, temperature=2.0)
    assert not torch.allclose(lp_hot, lp)


def test_static_cache_decodes_as_the_dynamic_cache(model_dir, policy):
    """LLaVA layout (image tokens in the text): the static KV cache gives the dynamic cache's greedy tokens on rows
    of unequal prompt lengths, and its sampled tokens and log-probs under one seed."""
    import inspect

    import transformers

    obs = random_obs(4, size=48, seed=3)
    forward = type(policy.model.get_base_model()).forward
    if transformers.__version__.startswith("4.") and "cache_position" not in inspect.signature(forward).parameters:
        # LLaVA of transformers 4.40 cannot place a step in a static cache: refused when the policy is built
        with pytest.raises(ValueError, match="takes no cache_position"):
            HFVLAPolicy.from_pretrained(model_dir, dtype="float32", static_cache=True)
        return
    static = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8), static_cache=True)
    static.load_state_dict(policy.state_dict())
    # transformers 5: the prompt's forward writes straight into the static cache; 4.x copies a dynamic cache in
    assert static._static.prefills == transformers.__version__.startswith("5.")
    results = []
    for pol in (policy, static):
        greedy = pol.sample(obs, MIXED, temperature=0.0)
        torch.manual_seed(5)
        results.append([*greedy, *pol.sample(obs, [MIXED[0]] * 4, temperature=1.0)])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_compiled_prefill_decodes_as_the_dynamic_cache(model_dir, policy):
    """The prompt's forward compiled (with the decoding step, on merged weights): the dynamic cache's greedy tokens
    and, under one seed, its sampled tokens and log-probs, on two calls (the second replays). Where the prompt's
    forward cannot write into a static cache (transformers 4.x), the option is refused when set."""
    import transformers

    kw = {"compile_prefill": True, "compile_decoding": True, "merged_sampling": True}
    if not transformers.__version__.startswith("5."):
        with pytest.raises(ValueError, match="compile_prefill"):
            HFVLAPolicy.from_pretrained(model_dir, dtype="float32", **kw)
        return
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an adapter that changes the policy (a fresh one has B = 0)
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    fast = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8), **kw)
    fast.load_state_dict(policy.state_dict())
    assert fast.compile_prefill and fast.static_cache and fast._static.prefills
    obs, rows = random_obs(4, size=48, seed=4), [MIXED[0]] * 4  # one prompt length: one compiled graph
    results = []
    for pol in (policy, fast, fast):
        greedy = pol.sample(obs, rows, temperature=0.0)
        torch.manual_seed(6)
        results.append([*greedy, *pol.sample(obs, rows, temperature=1.0)])
    for got in results[1:]:
        for g, w in zip(got, results[0]):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


def test_first_token_log_prob_is_the_softmax_over_the_last_256_ids(policy):
    """Independent check of the restriction and of OpenVLA's id order (token k = id V - 1 - k)."""
    from PIL import Image

    obs = random_obs(1, size=32)
    tokens, logp = policy.sample(obs, [INSTRUCTIONS[0]], temperature=1.0)
    prompt = "<image>\n" + openvla_prompt(INSTRUCTIONS[0])
    batch = policy.processor(
        text=[prompt], images=[Image.fromarray(obs["agentview"][0])], return_tensors="pt"
    )
    with torch.no_grad():
        logits = policy.model(**batch).logits[0, -1]
    v = policy.vocab_size
    action_logp = torch.log_softmax(logits[v - 256 : v], dim=-1)  # position j is id V - 256 + j
    k = int(tokens[0, 0])
    torch.testing.assert_close(logp[0, 0], action_logp[255 - k], atol=1e-5, rtol=1e-5)


def test_greedy_is_deterministic_and_actions_in_range(policy):
    obs = random_obs(2, size=32)
    t1, lp = policy.sample(obs, MIXED[:2], temperature=0.0)
    t2, _ = policy.sample(obs, MIXED[:2], temperature=0.0)
    assert torch.equal(t1, t2) and torch.all(lp == 0)
    actions = policy.tokens_to_actions(t1)
    assert actions.shape == (2, 7) and np.abs(actions).max() <= 1


def test_micro_batches_and_gradient_checkpointing_give_the_same_log_probs(model_dir):
    obs, tokens = random_obs(5, size=32), torch.randint(0, 256, (5, 7))
    instr = MIXED + [INSTRUCTIONS[1]]
    whole = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", micro_batch_size=8)
    split = HFVLAPolicy.from_pretrained(
        model_dir, dtype="float32", micro_batch_size=2, gradient_checkpointing=True
    )
    lp_whole, _ = whole.log_probs(obs, instr, tokens)
    lp_split, _ = split.log_probs(obs, instr, tokens)
    torch.testing.assert_close(lp_split.detach(), lp_whole.detach(), atol=1e-5, rtol=1e-5)
    lp_split.sum().backward()  # gradients reach the adapter through the checkpointed layers
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in split.trainable_parameters())


def test_bfloat16_loads_and_samples(model_dir):
    policy = HFVLAPolicy.from_pretrained(model_dir, dtype="bfloat16")
    assert policy.dtype == torch.bfloat16
    obs = random_obs(2, size=32)
    tokens, logp = policy.sample(obs, MIXED[:2])
    lp, _ = policy.log_probs(obs, MIXED[:2], tokens)
    assert torch.isfinite(lp).all() and lp.dtype == torch.float32
    torch.testing.assert_close(lp.detach(), logp, atol=0.1, rtol=0.05)  # bf16 rounding only


def test_one_tgrpo_update_moves_lora_and_leaves_base_weights(tmp_path, model_dir):
    policy = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8))
    env = make_camera_vec_env(2, size=32, state_dim=0)
    obs, _ = env.reset(seed=0)
    fixed_tokens = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(0))
    ref_before = policy.ref_log_probs(obs, MIXED[:2], fixed_tokens)
    lp_before, _ = policy.log_probs(obs, MIXED[:2], fixed_tokens)
    lora_before, base_before = _lora_and_base(policy)

    cfg = small_config(tmp_path, iterations=1, max_steps=2, lr=1e-3, kl_beta=0.04)
    result = tgrpo.train(env, policy, cfg)

    assert result.history[0]["losses/optimizer_steps"] == 2
    lora_after, base_after = _lora_and_base(policy)
    assert any(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    lp_after, _ = policy.log_probs(obs, MIXED[:2], fixed_tokens)
    assert not torch.allclose(lp_after, lp_before)
    torch.testing.assert_close(policy.ref_log_probs(obs, MIXED[:2], fixed_tokens), ref_before)

    # the checkpoint holds the adapter only, and restores it into a fresh policy
    state = tgrpo.load_checkpoint(result.checkpoint)["policy"]
    assert state and all("lora_" in k for k in state)
    fresh = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", lora=LoRASettings(r=4, alpha=8))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.log_probs(obs, MIXED[:2], fixed_tokens)[0], lp_after)


def test_saved_adapter_loads_back(tmp_path, model_dir, policy):
    with torch.no_grad():
        for n, p in policy.model.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    obs, tokens = random_obs(2, size=32), torch.randint(0, 256, (2, 7))
    lp, _ = policy.log_probs(obs, MIXED[:2], tokens)
    policy.save_adapter(tmp_path / "adapter")
    again = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", adapter_path=tmp_path / "adapter")
    torch.testing.assert_close(again.log_probs(obs, MIXED[:2], tokens)[0], lp)
    assert again.trainable_parameters()


def test_bad_paths_and_options_raise(tmp_path, model_dir):
    with pytest.raises(ValueError, match="no such local directory"):
        HFVLAPolicy.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        HFVLAPolicy.from_pretrained(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype='fp8'"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="fp8")
    with pytest.raises(ValueError, match="n_bins=128 but the policy has n_bins=256"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="float32", tokenizer=ActionTokenizer(n_bins=128))
    with pytest.raises(ValueError, match="LoRA rank r=0"):
        LoRASettings(r=0)
    with pytest.raises(ValueError, match="instruction"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="float32", prompt_template="Out:")


def test_bad_observations_raise(policy):
    with pytest.raises(ValueError, match="'agentview' not found"):
        policy.sample({"wrist": np.zeros((2, 32, 32, 3), np.uint8)}, ["a", "b"])
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        policy.sample({"agentview": np.zeros((2, 3, 32, 32), np.uint8)}, ["a", "b"])
    with pytest.raises(ValueError, match="1 instructions for a batch of 2"):
        policy.sample(random_obs(2), ["a"])
    with pytest.raises(ValueError, match=r"expected \(2, 7\)"):
        policy.log_probs(random_obs(2), ["a", "b"], torch.zeros((2, 3), dtype=torch.long))


def test_openvla_action_transform_unnormalises_and_flips_the_gripper(model_dir):
    from tgrpo.policies import openvla_action_transform

    stats = {"q01": [-0.5] * 6 + [0.0], "q99": [0.5] * 6 + [1.0], "mask": [True] * 6 + [False]}
    f = openvla_action_transform(stats)
    out = f(np.array([[-1.0, 0.0, 1.0, 0.5, 0.0, 0.0, 0.9]]))
    np.testing.assert_allclose(
        out, [[-0.5, 0.0, 0.5, 0.25, 0.0, 0.0, -1.0]]
    )  # gripper 0.9 -> close(+1) -> -1
    policy = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", action_transform=f)
    tokens = torch.full((1, 7), 255)
    np.testing.assert_allclose(policy.tokens_to_actions(tokens), f(ActionTokenizer().decode(tokens.numpy())))
    with pytest.raises(ValueError, match="unnorm_key='libero_object'"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="float32", unnorm_key="libero_object")


def test_mirror_images_flips_left_right_before_the_processor(model_dir):
    plain = HFVLAPolicy.from_pretrained(model_dir, dtype="float32")
    mirrored = HFVLAPolicy.from_pretrained(model_dir, dtype="float32", mirror_images=True)
    assert not plain.mirror_images  # a LLaVA model: off by default (on for model_type "openvla")
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(mirrored._images({"agentview": images}), images[:, :, ::-1])
    np.testing.assert_array_equal(plain._images({"agentview": images}), images)
