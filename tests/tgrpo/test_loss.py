"""The clipped surrogate + k3 KL loss: gradient signs, clipping, normalisation, errors."""

import math

import pytest
import torch

from tgrpo.loss import k3_kl, tgrpo_loss


def _grad(logp0, old, adv, **kw):
    logp = logp0.clone().requires_grad_(True)
    loss, metrics = tgrpo_loss(logp, old, adv, **kw)
    loss.backward()
    return logp.grad, loss, metrics


@pytest.mark.parametrize("level", ["token", "action"])
def test_gradient_sign_follows_advantage(level):
    old = torch.full((2, 7), -2.0)
    adv = torch.tensor([1.0, -1.0])
    g, _, _ = _grad(old, old, adv, ratio_level=level)
    # minimising the loss raises log-probs of the positive-advantage action, lowers the negative one
    assert (g[0] < 0).all() and (g[1] > 0).all()


def test_unclipped_loss_value_token_level():
    old = torch.zeros(2, 7)
    logp = old + torch.tensor([[0.1], [-0.1]])
    adv = torch.tensor([2.0, 1.0])
    loss, m = tgrpo_loss(logp, old, adv, clip_eps=0.5)
    expected = -(math.exp(0.1) * 2.0 + math.exp(-0.1) * 1.0) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert m["clip_fraction"] == 0.0


def test_clipping_stops_gradient_beyond_range():
    old = torch.zeros(1, 7)
    up = torch.full((1, 7), math.log(1.5))  # ratio 1.5 > 1 + 0.2
    g, loss, m = _grad(up, old, torch.tensor([1.0]), clip_eps=0.2)
    assert torch.all(g == 0) and m["clip_fraction"] == 1.0
    assert loss.item() == pytest.approx(-1.2, rel=1e-6)  # clipped ratio times advantage
    # negative advantage with ratio above the range is not clipped (min picks the unclipped term)
    g, _, _ = _grad(up, old, torch.tensor([-1.0]), clip_eps=0.2)
    assert (g > 0).all()
    # positive advantage with ratio below 1 - eps keeps its gradient
    down = torch.full((1, 7), math.log(0.5))
    g, _, _ = _grad(down, old, torch.tensor([1.0]), clip_eps=0.2)
    assert (g < 0).all()


def test_action_level_ratio_is_product_of_token_ratios():
    old = torch.zeros(1, 7)
    logp = torch.full((1, 7), 0.01)  # each token ratio ~1.01, action ratio exp(0.07) ~1.0725
    _, m_tok = tgrpo_loss(logp, old, torch.tensor([1.0]), clip_eps=0.05, ratio_level="token")
    loss, m_act = tgrpo_loss(logp, old, torch.tensor([1.0]), clip_eps=0.05, ratio_level="action")
    assert m_tok["clip_fraction"] == 0.0 and m_act["clip_fraction"] == 1.0
    assert m_act["ratio_mean"] == pytest.approx(math.exp(0.07), rel=1e-6)
    assert loss.item() == pytest.approx(-1.05, rel=1e-6)


def test_weights_implement_per_trajectory_normalisation():
    # two trajectories of lengths 1 and 3: eq. 9 weights 1/(M|o_i|) = 1/2 for the first, 1/6 for each step
    # of the second, so the single step of trajectory 0 counts as much as all of trajectory 1
    old = torch.zeros(4, 7)
    adv = torch.tensor([4.0, 1.0, 1.0, 1.0])
    w = torch.tensor([1 / 2, 1 / 6, 1 / 6, 1 / 6])
    loss, _ = tgrpo_loss(old.clone(), old, adv, weights=w)
    assert loss.item() == pytest.approx(-(4.0 / 2 + 1.0 / 2))
    loss_scaled, _ = tgrpo_loss(old.clone(), old, adv, weights=10 * w)  # renormalised
    assert loss_scaled.item() == pytest.approx(loss.item())


def test_k3_kl_properties_and_penalty_gradient():
    assert k3_kl(torch.tensor(-1.0), torch.tensor(-1.0)).item() == 0.0
    x = torch.linspace(-3, 3, 13)
    assert (k3_kl(x, torch.zeros(13)) >= 0).all()
    ref = torch.full((1, 7), -1.0)
    logp = torch.full((1, 7), -0.5)
    g, _, m = _grad(logp, logp.clone(), torch.tensor([0.0]), ref_logp=ref, kl_beta=1.0)
    assert m["ref_kl"] > 0
    assert (g > 0).all()  # the penalty pulls log-probs back toward the reference's lower values


def test_metrics_report_entropy_and_approx_kl():
    old = torch.zeros(3, 7)
    logp = old + 0.2
    # token k of every action has entropy 0.1 * k: 0.3 nats per token, 2.1 per 7-token action
    entropy = (0.1 * torch.arange(7.0)).expand(3, 7)
    _, m = tgrpo_loss(logp, old, torch.ones(3), entropy=entropy)
    assert m["entropy_token"] == pytest.approx(0.3)
    assert m["entropy_action"] == pytest.approx(2.1)
    assert "entropy" not in m  # the ambiguous name is gone: every entropy says what it is per
    assert m["approx_kl"] == pytest.approx(7 * (math.exp(0.2) - 1 - 0.2), rel=1e-5)
    assert set(m) >= {"policy_loss", "approx_kl", "clip_fraction", "ratio_mean", "entropy_token", "entropy_action"}


def test_entropy_per_token_is_weighted_like_the_loss():
    old = torch.zeros(2, 7)
    entropy = torch.stack([torch.full((7,), 1.0), torch.full((7,), 3.0)])
    _, m = tgrpo_loss(old.clone(), old, torch.ones(2), entropy=entropy, weights=torch.tensor([3.0, 1.0]))
    assert m["entropy_token"] == pytest.approx(0.75 * 1.0 + 0.25 * 3.0)
    assert m["entropy_action"] == pytest.approx(7 * (0.75 * 1.0 + 0.25 * 3.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ratio_level="sequence"), "ratio_level"),
        (dict(clip_eps=1.5), "clip_eps"),
        (dict(kl_beta=0.1), "ref_logp"),
        (dict(kl_beta=-1.0), "kl_beta"),
        (dict(weights=torch.ones(3)), "weights"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tgrpo_loss(torch.zeros(2, 7), torch.zeros(2, 7), torch.zeros(2), **kwargs)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="advantages"):
        tgrpo_loss(torch.zeros(2, 7), torch.zeros(2, 7), torch.zeros(2, 7))
    with pytest.raises(ValueError, match="old_logp"):
        tgrpo_loss(torch.zeros(2, 7), torch.zeros(2, 6), torch.zeros(2))
