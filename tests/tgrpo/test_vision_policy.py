"""tgrpo.policies.vision: the CPU vision-language token-action policy."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from tgrpo_fakes import small_config
from tgrpo_vision_fakes import INSTRUCTIONS, make_camera_vec_env, random_obs

import tgrpo
from tgrpo.policies import VisionLanguageTokenPolicy, hash_instruction
from tgrpo.policies.common import token_stats
from tgrpo.tokenizer import ActionTokenizer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def policy():
    return VisionLanguageTokenPolicy(state_dim=5, image_size=32, seed=0)


def test_implements_protocol(policy):
    assert isinstance(policy, tgrpo.TokenActionPolicy)
    assert policy.action_dim == 7 and policy.n_bins == 256


def test_sample_shapes_and_log_probs_agree(policy):
    obs = random_obs(4)
    tokens, logp = policy.sample(obs, [INSTRUCTIONS[0]] * 4, temperature=1.0)
    assert tokens.shape == (4, 7) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) <= 255
    assert not logp.requires_grad
    lp, ent = policy.log_probs(obs, [INSTRUCTIONS[0]] * 4, tokens, temperature=1.0)
    assert lp.requires_grad and ent.shape == (4, 7)
    torch.testing.assert_close(lp.detach(), logp)
    assert float(ent.detach().mean()) == pytest.approx(np.log(256), rel=0.02)  # near-uniform start
    actions = policy.tokens_to_actions(tokens)
    assert actions.shape == (4, 7) and actions.dtype == np.float32 and np.abs(actions).max() <= 1


def test_greedy_is_deterministic(policy):
    obs = random_obs(3)
    t1, lp = policy.sample(obs, ["a"] * 3, temperature=0.0)
    t2, _ = policy.sample(obs, ["a"] * 3, temperature=0.0)
    assert torch.equal(t1, t2) and torch.all(lp == 0)


@pytest.mark.parametrize("shape", [(32, 32), (96, 96), (128, 128), (48, 80)])
def test_any_image_size_is_resized_inside(shape):
    policy = VisionLanguageTokenPolicy(image_size=32)
    rng = np.random.default_rng(0)
    obs = {k: rng.integers(0, 256, (2, *shape, 3), dtype=np.uint8) for k in ("agentview", "wrist")}
    assert policy.logits(obs, ["x", "y"]).shape == (2, 7, 256)


def test_from_space_reads_cameras_and_state():
    env = make_camera_vec_env(2, state_dim=5)
    policy = VisionLanguageTokenPolicy.from_space(env.single_observation_space, image_size=32)
    assert policy.cameras == ("agentview", "wrist") and policy.state_dim == 5
    rgb_only = make_camera_vec_env(2, state_dim=0).single_observation_space
    assert VisionLanguageTokenPolicy.from_space(rgb_only).state_dim == 0
    no_state = VisionLanguageTokenPolicy.from_space(
        env.single_observation_space, cameras=["agentview"], use_state=False
    )
    assert no_state.cameras == ("agentview",) and no_state.state_dim == 0


def test_instruction_and_image_change_the_output(policy):
    # perturb the text and FiLM weights away from their zero init so that both paths are live
    with torch.no_grad():
        for p in policy.net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obs = random_obs(2)
    same = policy.logits(obs, [INSTRUCTIONS[0]] * 2)
    other_text = policy.logits(obs, [INSTRUCTIONS[1]] * 2)
    other_image = policy.logits(random_obs(2, seed=1), [INSTRUCTIONS[0]] * 2)
    assert not torch.allclose(same, other_text) and not torch.allclose(same, other_image)


def test_learns_instruction_conditioned_tokens():
    """Same images, two instructions, two different targets: only a policy that reads the text fits both."""
    torch.manual_seed(0)
    policy = VisionLanguageTokenPolicy(image_size=32, seed=0)
    one = random_obs(1, state_dim=0)
    obs = {k: np.repeat(v, 8, axis=0) for k, v in one.items()}  # identical images in every row
    instr = [INSTRUCTIONS[i % 2] for i in range(8)]
    target = torch.tensor([[200] * 7 if i % 2 == 0 else [40] * 7 for i in range(8)])
    opt = torch.optim.AdamW(policy.trainable_parameters(), lr=policy.recommended_lr)
    for _ in range(60):
        lp, _ = policy.log_probs(obs, instr, target)
        opt.zero_grad()
        (-lp.mean()).backward()
        opt.step()
    greedy, _ = policy.sample(obs, instr, temperature=0.0)
    assert torch.all((greedy - target).abs() <= 3), greedy


def test_reference_stays_frozen_while_policy_moves(policy):
    obs, instr = random_obs(2), ["a", "b"]
    tokens, _ = policy.sample(obs, instr)
    ref_before = policy.ref_log_probs(obs, instr, tokens)
    opt = torch.optim.SGD(policy.trainable_parameters(), lr=1e-4)
    lp, _ = policy.log_probs(obs, instr, tokens)
    (-lp.sum()).backward()
    opt.step()
    lp_after = policy.log_probs(obs, instr, tokens)[0].detach()
    assert float(lp_after.sum()) > float(ref_before.sum()) + 1e-3
    torch.testing.assert_close(policy.ref_log_probs(obs, instr, tokens), ref_before)
    ref_ids = {id(p) for p in policy.ref.parameters()}
    assert not any(id(p) in ref_ids for p in policy.trainable_parameters())


def test_state_dict_round_trip(policy):
    obs, instr = random_obs(2), ["a", "b"]
    with torch.no_grad():
        policy.net.mlp[-1].bias.add_(1.0)
    tokens, logp = policy.sample(obs, instr)
    fresh = VisionLanguageTokenPolicy(state_dim=5, image_size=32, seed=1)
    fresh.load_state_dict(policy.state_dict())
    torch.testing.assert_close(fresh.log_probs(obs, instr, tokens)[0].detach(), logp)


def test_hash_instruction_is_stable_and_case_insensitive():
    a = hash_instruction("Pick up the KETCHUP.", 4096)
    assert a == hash_instruction("pick up the ketchup", 4096)
    assert a != hash_instruction("pick up the milk", 4096)
    assert all(0 <= i < 4096 for i in a) and len(a) == 4 + 3  # 4 words, 3 bigrams
    assert hash_instruction("", 16) == hash_instruction("  ", 16)


def test_trains_with_tgrpo_on_a_camera_env(tmp_path):
    env = make_camera_vec_env(4, size=32)
    policy = VisionLanguageTokenPolicy.from_space(env.single_observation_space, image_size=32)
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    result = tgrpo.train(env, policy, small_config(tmp_path, iterations=2, max_steps=4))
    assert len(result.history) == 2 and result.checkpoint is not None
    after = policy.trainable_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    # resuming restores the trained weights (the checkpoint carries network and reference)
    restored = VisionLanguageTokenPolicy.from_space(env.single_observation_space, image_size=32, seed=3)
    restored.load_state_dict(tgrpo.load_checkpoint(result.checkpoint)["policy"])
    for a, b in zip(restored.trainable_parameters(), after):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "obs, instructions, match",
    [
        (np.zeros((2, 32, 32, 3), np.uint8), ["a", "b"], "dict observations"),
        ({"agentview": np.zeros((2, 32, 32, 3), np.uint8)}, ["a", "b"], r"\['wrist'\] not found"),
        (
            {"agentview": np.zeros((2, 3, 32, 32), np.uint8), "wrist": np.zeros((2, 3, 32, 32), np.uint8)},
            ["a", "b"],
            r"\[B, H, W, 3\]",
        ),
        (
            {"agentview": np.zeros((2, 32, 32, 3), np.uint8), "wrist": np.zeros((2, 16, 16, 3), np.uint8)},
            ["a", "b"],
            "share one shape",
        ),
        (random_obs(2, state_dim=0), ["a", "b"], "'state' not found"),
        (random_obs(2, state_dim=4), ["a", "b"], "state_dim=5"),
        (random_obs(2), ["a"], "1 instructions for a batch of 2"),
        (random_obs(2), "a", "single string"),
    ],
)
def test_bad_observations_raise(policy, obs, instructions, match):
    with pytest.raises(ValueError, match=match):
        policy.sample(obs, instructions)


def test_bad_tokens_and_construction_raise(policy):
    obs = random_obs(2)
    with pytest.raises(ValueError, match=r"expected \(2, 7\)"):
        policy.log_probs(obs, ["a", "b"], torch.zeros((2, 6), dtype=torch.long))
    with pytest.raises(ValueError, match="0..255"):
        policy.log_probs(obs, ["a", "b"], torch.full((2, 7), 256))
    with pytest.raises(ValueError, match="n_bins=128 but the policy has n_bins=256"):
        VisionLanguageTokenPolicy(tokenizer=ActionTokenizer(n_bins=128))
    with pytest.raises(ValueError, match="image_size=8"):
        VisionLanguageTokenPolicy(image_size=8)
    with pytest.raises(ValueError, match="cameras"):
        VisionLanguageTokenPolicy(cameras=[])
    with pytest.raises(ValueError, match="Dict observation space"):
        VisionLanguageTokenPolicy.from_space(spaces.Box(0, 1, (4,)))
    state_only = spaces.Dict({"state": spaces.Box(-1, 1, (4,))})
    with pytest.raises(ValueError, match="not in the observation space"):
        VisionLanguageTokenPolicy.from_space(state_only)
    flat_image = spaces.Dict({"agentview": spaces.Box(0, 255, (32, 32), np.uint8)})
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        VisionLanguageTokenPolicy.from_space(flat_image)


def test_importing_policies_loads_no_hf_package():
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import tgrpo, tgrpo.policies, tgrpo.policies.vision; "
        "print(sorted(m for m in ('transformers', 'peft', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_large_batches_are_chunked_without_changing_the_result(policy):
    from tgrpo.policies import vision

    obs, instr = random_obs(vision.NO_GRAD_CHUNK + 5, size=16), [INSTRUCTIONS[0]] * (vision.NO_GRAD_CHUNK + 5)
    tokens = torch.randint(0, 256, (len(instr), 7))
    chunked = policy.ref_log_probs(obs, instr, tokens)
    whole = token_stats(policy.logits(obs, instr, ref=True), tokens, 1.0)[0].detach()
    torch.testing.assert_close(chunked, whole)
