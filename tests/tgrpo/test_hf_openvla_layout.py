"""OpenVLA's input layout, on a tiny model loaded the way ``openvla/openvla-7b`` is (remote code,
``model_type="openvla"``, ``norm_stats``), through the adapter's OpenVLA preset.

Facts checked (openvla/openvla, prismatic/extern/hf/modeling_prismatic.py and processing_prismatic.py,
experiments/robot/openvla_utils.py and libero/libero_utils.py): the prompt text; ``predict_action`` appends id
29871 only when the prompt's last id is not already 29871; the processor puts no image token in the text and the
model inserts the projected patches right after BOS; ``unnorm_key`` picks the ``norm_stats`` entry, may be left
out only when there is one entry, and a wrong or missing key is refused with the available keys; LIBERO frames are
robosuite's raw frame rotated by 180 degrees.
"""

import numpy as np
import pytest
import torch
from tgrpo_vision_fakes import random_obs

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

from tgrpo.policies import HFVLAPolicy  # noqa: E402
from tgrpo.policies.hf import HFLoadError, openvla_action_transform  # noqa: E402
from tgrpo.policies.tiny_vla import TINY_NORM_STATS, save_tiny_openvla  # noqa: E402

EMPTY = 29871
BOS = 1
MIXED = ["Pick up the BBQ sauce and place it in the basket", "pick up the ketchup", "put the bowl on the plate"]
PROMPT = "In: What action should the robot take to {}?\nOut:"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_openvla(tmp_path_factory.mktemp("tiny_openvla"))


@pytest.fixture(scope="module")
def policy(model_dir):
    return HFVLAPolicy.from_pretrained(
        model_dir, trust_remote_code=True, dtype="float32", unnorm_key="libero_object"
    )


class _Recorder:
    """Wraps the processor and records the texts and images it is called with."""

    def __init__(self, processor):
        self.inner, self.tokenizer, self.calls = processor, processor.tokenizer, []

    def __call__(self, text=None, images=None, **kw):
        self.calls.append((list(text), [np.asarray(im) for im in images]))
        return self.inner(text=text, images=images, **kw)


def _capture_language_model_inputs(policy):
    """Record what the decoder receives (inputs_embeds, attention_mask) at each forward."""
    seen = []

    def hook(module, args, kwargs):
        seen.append({k: kwargs.get(k) for k in ("inputs_embeds", "attention_mask", "input_ids")})

    base = policy.model.get_base_model()
    return seen, base.language_model.register_forward_pre_hook(hook, with_kwargs=True)


def test_loads_only_with_remote_code_and_gets_the_openvla_preset(model_dir, policy):
    with pytest.raises(HFLoadError, match="trust_remote_code"):
        HFVLAPolicy.from_pretrained(model_dir, dtype="float32", unnorm_key="libero_object")
    base = policy.model.get_base_model()
    assert base.config.model_type == "openvla"
    assert policy.extra_prompt_ids == (EMPTY,) and policy.mirror_images
    assert policy.use_cache and policy.decoder_attr == "language_model"
    assert policy.vocab_size == 32000 and base.get_output_embeddings().out_features == 32064
    tok = policy.processor.tokenizer
    assert tok.convert_ids_to_tokens(EMPTY) == "▁" and tok.bos_token_id == BOS
    assert getattr(policy.processor, "image_token", None) is None  # no image token: the model inserts it


def test_prompt_text_and_the_empty_token_appended_once(policy):
    rec = _Recorder(policy.processor)
    policy.processor = rec
    try:
        prompts, _ = policy._encode(random_obs(3, size=32), MIXED)
    finally:
        policy.processor = rec.inner
    texts = rec.calls[0][0]
    assert texts == [PROMPT.format(s.lower()) for s in MIXED]  # exactly OpenVLA's prompt, lower-cased
    for text, ids in zip(texts, prompts):
        plain = rec.tokenizer(text)["input_ids"]
        assert plain[0] == BOS and plain[-1] != EMPTY
        assert ids == plain + [EMPTY]  # appended because the prompt does not end with it

    # a template whose tokens already end with 29871: not appended a second time
    ending = HFVLAPolicy(policy.model, policy.processor, prompt_template="In: {instruction}? Out: ▁")
    ids = ending._encode(random_obs(1, size=32), MIXED[:1])[0][0]
    assert ids[-1] == EMPTY and ids[-2] != EMPTY
    assert ids == rec.tokenizer(f"In: {MIXED[0].lower()}? Out: ▁")["input_ids"]


def test_image_patches_sit_right_after_bos_in_what_the_model_gets(policy):
    obs = random_obs(3, size=32, seed=4)
    tokens = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(0))
    prompts, extras = policy._encode(obs, MIXED)
    base = policy.model.get_base_model()
    seen, handle = _capture_language_model_inputs(policy)
    try:
        with torch.no_grad():
            policy.log_probs(obs, MIXED, tokens)
    finally:
        handle.remove()
    (call,) = seen
    embeds, mask = call["inputs_embeds"], call["attention_mask"]
    with torch.no_grad():
        patches = base.patch_embeddings(extras["pixel_values"])
        table = base.get_input_embeddings().weight
    n_patch = patches.shape[1]
    assert n_patch == (32 // 8) ** 2
    action_ids = policy.tokenizer.to_vocab_ids(tokens, policy.vocab_size).tolist()
    lengths = [len(p) + 7 for p in prompts]
    assert len({len(p) for p in prompts}) == 3  # unequal lengths: the batch is padded
    assert embeds.shape[1] == n_patch + max(lengths)
    for r, (prompt, length) in enumerate(zip(prompts, lengths)):
        text = prompt + action_ids[r]
        torch.testing.assert_close(embeds[r, 0], table[BOS])  # BOS first
        torch.testing.assert_close(embeds[r, 1 : 1 + n_patch], patches[r])  # then the image patches
        torch.testing.assert_close(embeds[r, 1 + n_patch : n_patch + length], table[text[1:]])  # then the text
        expected_mask = torch.zeros(embeds.shape[1], dtype=mask.dtype)
        expected_mask[: n_patch + length] = 1  # padding after everything, never between BOS and the patches
        assert torch.equal(mask[r].cpu(), expected_mask)


def test_log_probs_and_greedy_actions_match_openvla_style_single_row_decoding(policy):
    """Each row on its own, as ``predict_action`` feeds it (processor output + 29871, no padding), with the
    action ids appended: the logits at the 7 positions before the end, restricted to the last 256 ids, give the
    same log-probs and greedy tokens as the batched, right-padded adapter."""
    from PIL import Image

    obs = random_obs(3, size=32, seed=5)
    tokens = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(1))
    lp, _ = policy.log_probs(obs, MIXED, tokens)
    greedy, _ = policy.sample(obs, MIXED, temperature=0.0)
    v = policy.vocab_size
    raw = obs["agentview"][:, ::-1]  # the observations are upright frames: robosuite's raw frame flipped
    rotated = np.rot90(raw, 2, axes=(1, 2))  # vertically; OpenVLA sees the raw frame rotated by 180 degrees
    for r, instruction in enumerate(MIXED):
        inputs = policy.processor(
            text=PROMPT.format(instruction.lower()), images=Image.fromarray(np.ascontiguousarray(rotated[r])),
            return_tensors="pt",
        )
        ids = inputs["input_ids"]
        if ids[0, -1] != EMPTY:
            ids = torch.cat([ids, torch.tensor([[EMPTY]])], dim=1)
        for row_tokens, check in ((tokens[r], "log_probs"), (greedy[r], "greedy")):
            action_ids = (v - 1 - row_tokens)[None]  # token k is id V - 1 - k
            with torch.no_grad():
                logits = policy.model(
                    input_ids=torch.cat([ids, action_ids], dim=1), pixel_values=inputs["pixel_values"]
                ).logits[0, -8:-1, v - 256 : v]  # the positions that predict the 7 action ids
            if check == "log_probs":
                expected = torch.log_softmax(logits, -1).gather(1, (action_ids[0] - (v - 256))[:, None])[:, 0]
                torch.testing.assert_close(lp[r].detach(), expected, atol=1e-5, rtol=1e-5)
            else:
                assert (logits.argmax(-1) + v - 256).tolist() == action_ids[0].tolist()


def test_cached_batched_sampling_matches_full_forwards_despite_the_batch_1_cached_step(policy):
    """OpenVLA's forward takes a cached decoding step at batch size 1 only (the tiny model refuses more, as
    OpenVLA asserts); the preset decodes the whole batch through ``language_model`` with the cache, and gets the
    tokens and log-probs of decoding without a cache (7 full forwards)."""
    obs = random_obs(4, size=32, seed=7)
    rows = [MIXED[0], MIXED[1], MIXED[0], MIXED[2]]
    ids = torch.tensor([[3, 4, 5], [6, 7, 8]])
    with torch.no_grad(), pytest.raises(ValueError, match="batch size 1"):
        out = policy.model(input_ids=ids, use_cache=True)
        policy.model(input_ids=ids[:, :1], past_key_values=out.past_key_values, use_cache=True)
    results = {}
    try:
        for use_cache in (True, False):
            policy.use_cache = use_cache
            greedy, greedy_lp = policy.sample(obs, rows, temperature=0.0)
            torch.manual_seed(3)  # one prompt length: one decoding group either way, the same random draws
            sampled, sampled_lp = policy.sample(obs, [MIXED[0]] * 4, temperature=1.0)
            results[use_cache] = (greedy, greedy_lp, sampled, sampled_lp)
    finally:
        policy.use_cache = True
    for cached, full in zip(results[True], results[False]):
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    lp, _ = policy.log_probs(obs, [MIXED[0]] * 4, results[True][2])
    torch.testing.assert_close(lp.detach(), results[True][3], atol=1e-5, rtol=1e-5)


def test_static_cache_and_compiled_decoding_give_the_dynamic_cache_tokens_and_log_probs(model_dir, policy):
    """The static KV cache (and its compiled step) decodes exactly what the dynamic cache does: greedy tokens on
    rows of three prompt lengths, sampled tokens under one seed, their log-probs; twice in a row (the cache is
    reset and reused), then at another batch size (a new cache)."""
    obs = random_obs(4, size=32, seed=11)
    rows = [MIXED[0], MIXED[1], MIXED[0], MIXED[2]]

    def decode(pol):
        first = pol.sample(obs, rows, temperature=0.0)
        again = pol.sample(obs, rows, temperature=0.0)
        torch.manual_seed(4)
        sampled = pol.sample(obs, [MIXED[1]] * 4, temperature=1.0)
        smaller = pol.sample({k: v[:2] for k, v in obs.items()}, rows[:2], temperature=0.0)
        return [*first, *again, *sampled, *smaller]

    expected = decode(policy)
    for compile_decoding in (False, True):
        other = HFVLAPolicy.from_pretrained(
            model_dir, trust_remote_code=True, dtype="float32", unnorm_key="libero_object",
            static_cache=True, compile_decoding=compile_decoding,
        )
        other.load_state_dict(policy.state_dict())
        assert other.static_cache and other.compile_decoding == compile_decoding
        for got, want in zip(decode(other), expected):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="use_cache=False"):
        HFVLAPolicy.from_pretrained(
            model_dir, trust_remote_code=True, dtype="float32", unnorm_key="libero_object", use_cache=False,
            static_cache=True,
        )


def test_unnorm_key_selects_its_norm_stats_entry(model_dir, policy):
    tokens = torch.randint(0, 256, (4, 7), generator=torch.Generator().manual_seed(2))
    centres = policy.tokenizer.decode(tokens.numpy())
    spatial = HFVLAPolicy.from_pretrained(
        model_dir, trust_remote_code=True, dtype="float32", unnorm_key="libero_spatial"
    )
    for pol, key in ((policy, "libero_object"), (spatial, "libero_spatial")):
        stats = TINY_NORM_STATS[key]["action"]
        q01, q99, mask = (np.asarray(stats[k]) for k in ("q01", "q99", "mask"))
        expected = np.where(mask, 0.5 * (centres + 1) * (q99 - q01) + q01, centres)  # OpenVLA's formula
        out = pol.tokens_to_actions(tokens)
        np.testing.assert_allclose(out[:, :6], expected[:, :6], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[:, 6], -np.sign(2 * expected[:, 6] - 1))  # LIBERO's gripper sign
    assert not np.allclose(policy.tokens_to_actions(tokens), spatial.tokens_to_actions(tokens))


def test_a_missing_or_ambiguous_unnorm_key_is_refused_naming_the_keys(tmp_path, model_dir):
    with pytest.raises(ValueError, match=r"unnorm_key='bridge_orig'.*\['libero_object', 'libero_spatial'\]"):
        HFVLAPolicy.from_pretrained(model_dir, trust_remote_code=True, dtype="float32", unnorm_key="bridge_orig")
    with pytest.raises(ValueError, match=r"2 datasets \['libero_object', 'libero_spatial'\].*unnorm_key"):
        HFVLAPolicy.from_pretrained(model_dir, trust_remote_code=True, dtype="float32")
    # one entry: OpenVLA uses it without a key, and so does the adapter
    only = {"libero_spatial": TINY_NORM_STATS["libero_spatial"]}
    single = HFVLAPolicy.from_pretrained(
        save_tiny_openvla(tmp_path / "single", norm_stats=only), trust_remote_code=True, dtype="float32"
    )
    tokens = torch.randint(0, 256, (2, 7), generator=torch.Generator().manual_seed(3))
    expected = openvla_action_transform(only["libero_spatial"]["action"])(single.tokenizer.decode(tokens.numpy()))
    np.testing.assert_array_equal(single.tokens_to_actions(tokens), expected)


def test_the_model_gets_libero_frames_rotated_by_180_degrees(policy):
    """libero_gym's frames are upright (robosuite's raw frame flipped vertically); OpenVLA's LIBERO data are the
    raw frame rotated by 180 degrees. The pixel values the model receives are those of the rotated frame."""
    raw = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    upright = np.ascontiguousarray(raw[:, ::-1])
    rec = _Recorder(policy.processor)
    policy.processor = rec
    try:
        _, extras = policy._encode({"agentview": upright}, MIXED[:2])
    finally:
        policy.processor = rec.inner
    rotated = np.rot90(raw, 2, axes=(1, 2))
    np.testing.assert_array_equal(np.stack(rec.calls[0][1]), rotated)
    from PIL import Image

    direct = policy.processor(
        text=["x", "x"], images=[Image.fromarray(np.ascontiguousarray(im)) for im in rotated], return_tensors="pt"
    )["pixel_values"]
    torch.testing.assert_close(extras["pixel_values"], direct)
    assert not torch.allclose(extras["pixel_values"][0], extras["pixel_values"][0].flip(-1))  # orientation shows
