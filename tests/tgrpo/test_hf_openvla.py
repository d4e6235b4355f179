"""OpenVLA's conventions, written out here from its published formulas and checked against the adapter.

Facts (openvla/openvla: prismatic/vla/action_tokenizer.py, prismatic/extern/hf/modeling_prismatic.py,
experiments/robot/libero): 256 bin edges ``linspace(-1, 1, 256)`` and their 255 midpoints; a token id is
``vocab_size - digitize(action, edges)``, decoded through ``clip(vocab_size - id - 1, 0, 254)`` into the
midpoints; un-normalisation ``0.5 * (a + 1) * (q99 - q01) + q01`` where ``mask``, the action as is elsewhere;
the prompt "In: What action should the robot take to {instruction}?\\nOut:" followed by id 29871; LIBERO
camera images rotated by 180 degrees from robosuite's raw frame.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

from tgrpo.policies import HFVLAPolicy, openvla_action_transform, openvla_prompt, save_tiny_llava  # noqa: E402
from tgrpo.policies.hf import OPENVLA_PRESET, model_preset  # noqa: E402
from tgrpo.tokenizer import ActionTokenizer  # noqa: E402

V = 32000  # OpenVLA's Llama-2 tokenizer.vocab_size
EDGES = np.linspace(-1.0, 1.0, 256)
CENTRES = (EDGES[:-1] + EDGES[1:]) / 2.0


def openvla_ids(actions):
    return V - np.digitize(np.clip(actions, -1.0, 1.0), EDGES)


def openvla_decode(ids):
    return CENTRES[np.clip(V - ids - 1, 0, CENTRES.shape[0] - 1)]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return HFVLAPolicy.from_pretrained(save_tiny_llava(tmp_path_factory.mktemp("tiny")), dtype="float32")


def test_action_token_ids_and_bin_centres_match_openvla():
    tok = ActionTokenizer()
    actions = np.random.default_rng(0).uniform(-1.2, 1.2, (500, 7))
    actions[:3] = [[-1.0] * 7, [1.0] * 7, [0.0] * 7]
    ids = np.asarray(tok.to_vocab_ids(tok.encode(actions), V))
    np.testing.assert_array_equal(ids, openvla_ids(actions))
    assert ids.min() >= V - 256 and ids.max() <= V - 1  # the last 256 ids of the vocabulary
    all_ids = np.arange(V - 256, V)
    decoded = tok.decode(np.asarray(tok.from_vocab_ids(all_ids, V))[None])[0]
    np.testing.assert_allclose(decoded, openvla_decode(all_ids))


def test_policy_maps_sampled_ids_to_openvla_actions(policy):
    ids = np.arange(policy.vocab_size - 256, policy.vocab_size)
    tokens = torch.as_tensor(np.asarray(policy.tokenizer.from_vocab_ids(ids, policy.vocab_size)))
    actions = policy.tokens_to_actions(tokens.reshape(-1, 1).expand(-1, 7))[:, 0]
    centres_for = CENTRES[np.clip(policy.vocab_size - ids - 1, 0, 254)]
    np.testing.assert_allclose(actions, centres_for)


def test_unnormalisation_matches_openvla():
    rng = np.random.default_rng(1)
    q01, q99 = rng.uniform(-0.9, -0.1, 7), rng.uniform(0.1, 0.9, 7)
    mask = np.array([True] * 6 + [False])
    a = rng.uniform(-1, 1, (20, 7))
    expected = np.where(mask, 0.5 * (a + 1) * (q99 - q01) + q01, a)
    out = openvla_action_transform({"q01": q01, "q99": q99, "mask": mask}, binarize_gripper=False,
                                   invert_gripper=False)(a.copy())
    np.testing.assert_allclose(out[:, :6], expected[:, :6].astype(np.float32), rtol=1e-6)
    # the gripper (mask False): OpenVLA's [0, 1] convention mapped to LIBERO's [-1, 1]
    np.testing.assert_allclose(out[:, 6], (2 * a[:, 6] - 1).astype(np.float32), rtol=1e-6)


def test_prompt_and_openvla_preset():
    assert openvla_prompt("Pick up the BBQ sauce and place it in the basket") == (
        "In: What action should the robot take to pick up the bbq sauce and place it in the basket?\nOut:"
    )
    from transformers import PretrainedConfig

    preset = model_preset(PretrainedConfig(model_type="openvla"))
    assert preset is OPENVLA_PRESET and preset.extra_prompt_ids == (29871,) and preset.mirror_images
    assert model_preset(PretrainedConfig(model_type="llava")).extra_prompt_ids == ()


def test_images_reach_the_model_as_openvla_sees_libero(policy):
    """libero_gym gives upright views (robosuite's raw frame flipped vertically); OpenVLA's LIBERO data are the
    raw frame rotated by 180 degrees. With the OpenVLA preset the policy hands the model exactly that."""
    raw = np.random.default_rng(2).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    upright = raw[:, ::-1]
    policy.mirror_images = OPENVLA_PRESET.mirror_images
    try:
        seen = policy._images({"agentview": upright})
    finally:
        policy.mirror_images = False
    np.testing.assert_array_equal(seen, np.rot90(raw, 2, axes=(1, 2)))
