"""ActionTokenizer: OpenVLA's 256-bin convention, round trips, vocabulary ids."""

import numpy as np
import pytest
import torch

from tgrpo.tokenizer import ActionTokenizer


def openvla_reference(actions, vocab_size):
    """OpenVLA's own formulas (prismatic/vla/action_tokenizer.py)."""
    bins = np.linspace(-1, 1, 256)
    centres = (bins[:-1] + bins[1:]) / 2.0
    ids = vocab_size - np.digitize(np.clip(actions, -1, 1), bins)
    decoded = centres[np.clip(vocab_size - ids - 1, 0, 254)]
    return ids, decoded


@pytest.mark.parametrize("convention", ["openvla", "uniform"])
def test_round_trip_actions(convention):
    tok = ActionTokenizer(convention=convention)
    a = np.random.default_rng(0).uniform(-1, 1, size=(1000, 7))
    k = tok.encode(a)
    assert k.dtype == np.int64 and k.min() >= 0 and k.max() <= 255
    err = np.abs(tok.decode(k) - a)
    assert err.max() <= tok.bin_width / 2 + 1e-6


@pytest.mark.parametrize("convention, n_tokens", [("openvla", 255), ("uniform", 256)])
def test_round_trip_tokens(convention, n_tokens):
    tok = ActionTokenizer(convention=convention)
    k = np.arange(n_tokens)
    np.testing.assert_array_equal(tok.encode(tok.decode(k)), k)


def test_matches_openvla_formulas():
    v = 32000
    tok = ActionTokenizer()
    a = np.concatenate([np.linspace(-1.2, 1.2, 501), [-1.0, 1.0, 0.0]])
    ids, decoded = openvla_reference(a, v)
    np.testing.assert_array_equal(tok.to_vocab_ids(tok.encode(a), v), ids)
    np.testing.assert_allclose(tok.decode(tok.from_vocab_ids(ids, v)), decoded, atol=1e-6)


def test_edges_and_clipping():
    tok = ActionTokenizer()
    np.testing.assert_array_equal(tok.encode(np.array([-5.0, -1.0, 1.0, 5.0])), [0, 0, 255, 255])
    assert tok.decode(np.array([254]))[0] == tok.decode(np.array([255]))[0]  # OpenVLA: 255 centres


def test_vocab_ids_are_last_256_and_invert():
    tok = ActionTokenizer()
    k = torch.arange(256)
    ids = tok.to_vocab_ids(k, 1000)
    assert int(ids.min()) == 1000 - 256 and int(ids.max()) == 999
    assert torch.equal(tok.from_vocab_ids(ids, 1000), k)
    assert tok.vocab_slice(1000) == slice(744, 1000)
    with pytest.raises(ValueError, match="last 256"):
        tok.from_vocab_ids(np.array([10]), 1000)


def test_decode_rejects_out_of_range_tokens():
    with pytest.raises(ValueError, match="0..255"):
        ActionTokenizer().decode(np.array([256]))
    with pytest.raises(ValueError, match="convention"):
        ActionTokenizer(convention="rt2")
