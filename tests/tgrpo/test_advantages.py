"""Advantages (eqs. 6-8) against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from tgrpo.advantages import step_advantages, tgrpo_advantages, trajectory_advantages

S2 = 1 / math.sqrt(2)


def test_step_advantages_by_hand():
    # column 0: values 1, 3 -> mean 2, n-1 std sqrt(2) -> -1/sqrt2, +1/sqrt2; column 1: equal -> 0
    r = np.array([[1.0, 2.0], [3.0, 2.0]])
    np.testing.assert_allclose(step_advantages(r), [[-S2, 0.0], [S2, 0.0]])


def test_step_advantages_three_envs():
    # column: 0, 1, 2 -> mean 1, std sqrt(((1 + 0 + 1) / 2)) = 1 -> -1, 0, 1
    r = np.array([[0.0], [1.0], [2.0]])
    np.testing.assert_allclose(step_advantages(r), [[-1.0], [0.0], [1.0]])


def test_trajectory_advantages_by_hand():
    # returns 1, 2, 3, 6: mean 3, deviations -2 -1 0 3, var (4+1+0+9)/3 = 14/3
    t = trajectory_advantages(np.array([1.0, 2.0, 3.0, 6.0]))
    sd = math.sqrt(14 / 3)
    np.testing.assert_allclose(t, [-2 / sd, -1 / sd, 0.0, 3 / sd])


def test_all_equal_and_all_fail_groups_give_zero():
    np.testing.assert_array_equal(tgrpo_advantages(np.full((4, 5), 2.0), 1.0, 1.0), np.zeros((4, 5)))
    np.testing.assert_array_equal(tgrpo_advantages(np.zeros((4, 5)), 10.0, 1.0), np.zeros((4, 5)))
    np.testing.assert_array_equal(trajectory_advantages(np.zeros(3)), np.zeros(3))


def test_tgrpo_fuses_step_and_trajectory_terms():
    # rewards: env0 [1, 2], env1 [3, 2]; S = [[-a, 0], [a, 0]], totals 3, 5 -> T = [-a, a], a = 1/sqrt2
    r = np.array([[1.0, 2.0], [3.0, 2.0]])
    adv = tgrpo_advantages(r, alpha1=10.0, alpha2=1.0)
    np.testing.assert_allclose(adv, [[-11 * S2, -S2], [11 * S2, S2]])
    np.testing.assert_allclose(tgrpo_advantages(r, 0.0, 1.0), [[-S2, -S2], [S2, S2]])  # trajectory-only
    np.testing.assert_allclose(tgrpo_advantages(r, 1.0, 0.0), [[-S2, 0.0], [S2, 0.0]])  # step-only


def test_same_step_rewards_but_different_outcomes():
    # the paper's motivating case: equal rewards at a step give S = 0 there, T still separates the envs
    r = np.array([[2.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
    adv = tgrpo_advantages(r, 0.0, 1.0)
    assert (adv[0] > 0).all() and (adv[1] < 0).all()
    np.testing.assert_array_equal(step_advantages(r)[:, :2], 0.0)


def test_mask_uses_valid_entries_only():
    r = np.array([[1.0, 1.0, 1.0], [3.0, 5.0, 99.0], [2.0, 0.0, 99.0]])
    mask = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=bool)
    adv = tgrpo_advantages(r, 1.0, 1.0, mask=mask)
    # step 0: 1, 3, 2 -> mean 2, std 1 -> -1, 1, 0; step 1: 1, 5 -> -1/sqrt2, +1/sqrt2; step 2: one value -> 0
    # totals (valid only): 3, 8, 2 -> mean 13/3, deviations -4/3, 11/3, -7/3, var (16+121+49)/9/2 = 31/3
    sd = math.sqrt(31 / 3)
    t = np.array([-4 / 3, 11 / 3, -7 / 3]) / sd
    expected = np.array([[-1 + t[0], -S2 + t[0], 0 + t[0]], [1 + t[1], S2 + t[1], 0.0], [0 + t[2], 0.0, 0.0]])
    np.testing.assert_allclose(adv, expected)


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    r = rng.integers(0, 4, size=(6, 9)).astype(np.float64)
    mask = rng.random((6, 9)) < 0.8
    a_np = tgrpo_advantages(r, 0.3, 0.7, mask=mask)
    a_t = tgrpo_advantages(torch.as_tensor(r), 0.3, 0.7, mask=torch.as_tensor(mask))
    assert isinstance(a_t, torch.Tensor)
    np.testing.assert_allclose(a_t.numpy(), a_np, atol=1e-12)
    np.testing.assert_allclose(step_advantages(torch.as_tensor(r)).numpy(), step_advantages(r))
    np.testing.assert_allclose(
        trajectory_advantages(torch.as_tensor(r.sum(1))).numpy(), trajectory_advantages(r.sum(1))
    )


def test_integer_rewards_accepted():
    adv = tgrpo_advantages(np.array([[0, 1], [1, 1]]), 1.0, 1.0)
    assert adv.dtype == np.float64 and adv[1, 0] > 0


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: step_advantages(np.zeros(3)), r"\[M, L\]"),
        (lambda: trajectory_advantages(np.zeros((2, 2))), r"\[M\]"),
        (lambda: tgrpo_advantages(np.array([[1.0, np.nan], [0.0, 0.0]]), 1, 1), "NaN"),
        (lambda: tgrpo_advantages(np.zeros((2, 3)), 1, 1, mask=np.ones((3, 2), bool)), "mask has shape"),
        (lambda: tgrpo_advantages(np.zeros((2, 3)), 1, 1, mask=np.full((2, 3), 2)), "0 and 1"),
        (lambda: tgrpo_advantages(np.zeros((2, 3)), float("inf"), 1), "alpha1"),
        (lambda: step_advantages("abc"), "numpy array or a torch tensor"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
