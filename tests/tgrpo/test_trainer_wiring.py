"""tgrpo.train's wiring: the advantages and eq. 9's 1/(M |o_i|) weights that reach the loss, by hand.

A scripted group on the fake staged env (``tgrpo_fakes``): three sub-envs whose tokens are fixed per row,
so their rewards (the stage reached after each step) are known in advance:

* env 0 emits high tokens on every dimension: stages 1, 2, 3, a success at step 3 (rewards 1, 2, 3);
* env 1 emits low tokens: stage 0 until it terminates at step 2 (rewards 0, 0);
* env 2 passes only the first stage: stage 1 until it terminates at step 4 (rewards 1, 1, 1, 1).

``rollout_mode="independent"`` keeps each trajectory to its own end (lengths 3, 2, 4); ``"paper"`` ends the
group at the first success (step 3), so env 2's trajectory has 3 steps. The loss is replaced by a spy that
records its arguments and calls the real one.
"""

import numpy as np
import pytest
import torch
from tgrpo_fakes import make_vec_env, small_config

import tgrpo
import tgrpo.trainer

HIGH, LOW = 255, 0
ROW_TOKENS = [[HIGH] * 7, [LOW] * 7, [HIGH] + [LOW] * 6]
ALPHA1, ALPHA2 = 2.0, 0.5
M = 3

R3 = 1 / np.sqrt(3)
R2 = 1 / np.sqrt(2)
# Step advantages S[i, t] (eq. 6, std with n - 1, over the envs still running at t; 0 with fewer than two).
# t=0 rewards (1, 0, 1): mean 2/3, std sqrt(1/3); t=1 (2, 0, 1): mean 1, std 1; t=2 (3, -, 1): mean 2,
# std sqrt(2); t=3 (-, -, 1): a single value.
STEP_ADV = np.array(
    [
        [R3, 1.0, R2, 0.0],
        [-2 * R3, -1.0, 0.0, 0.0],
        [R3, 0.0, -R2, 0.0],
    ]
)
HAND = {
    # returns (6, 0, 4): mean 10/3, std sqrt(28/3)
    "independent": dict(
        lengths=[3, 2, 4],
        traj_adv=np.array([8 / 3, -10 / 3, 2 / 3]) / np.sqrt(28 / 3),
        success=[True, False, False],
    ),
    # returns (6, 0, 3): mean 3, std 3
    "paper": dict(lengths=[3, 2, 3], traj_adv=np.array([1.0, -1.0, 0.0]), success=[True, False, False]),
}


class ScriptedRows(tgrpo.MLPTokenPolicy):
    """Row i of every batch emits ``ROW_TOKENS[i]``; log-probs stay the MLP's own (differentiable)."""

    def sample(self, obs, instructions, temperature=1.0):
        n = len(instructions)
        return torch.tensor(ROW_TOKENS[:n]), torch.zeros(n, 7)


def _scripted_envs():
    return make_vec_env(M, threshold=0.5, per_env=[{}, {"terminate_at": 2}, {"terminate_at": 4}])


def _expected(mode):
    hand = HAND[mode]
    lengths = np.array(hand["lengths"])
    mask = np.arange(4)[None, :] < lengths[:, None]
    adv = (ALPHA1 * STEP_ADV + ALPHA2 * hand["traj_adv"][:, None]) * mask
    return adv[:, : lengths.max()], mask[:, : lengths.max()], 1.0 / (M * lengths)


@pytest.fixture
def loss_calls(monkeypatch):
    calls = []
    real = tgrpo.trainer.tgrpo_loss

    def spy(logp, old_logp, advantages, **kwargs):
        calls.append(
            {
                "n": logp.shape[0],
                "advantages": advantages.detach().cpu().numpy().astype(np.float64),
                "weights": kwargs["weights"].detach().cpu().numpy().astype(np.float64),
                **{k: v for k, v in kwargs.items() if k not in ("weights", "ref_logp", "entropy")},
                "has_ref": kwargs.get("ref_logp") is not None,
            }
        )
        return real(logp, old_logp, advantages, **kwargs)

    monkeypatch.setattr(tgrpo.trainer, "tgrpo_loss", spy)
    return calls


@pytest.mark.parametrize("mode", ["independent", "paper"])
def test_group_advantages_match_hand_values(mode):
    group = tgrpo.collect_group(_scripted_envs(), ScriptedRows(5), max_steps=6, mode=mode, seed=0)
    adv, mask, _ = _expected(mode)
    np.testing.assert_array_equal(group.lengths, HAND[mode]["lengths"])
    np.testing.assert_array_equal(group.success, HAND[mode]["success"])
    got = tgrpo.trainer.compute_advantages(group, tgrpo.TGRPOConfig(alpha1=ALPHA1, alpha2=ALPHA2))
    np.testing.assert_allclose(got, adv, atol=1e-12)


@pytest.mark.parametrize("mode", ["independent", "paper"])
@pytest.mark.parametrize("ratio_level", ["token", "action"])
def test_per_step_updates_receive_hand_advantages_and_weights(tmp_path, loss_calls, mode, ratio_level):
    cfg = small_config(
        tmp_path, iterations=1, max_steps=6, alpha1=ALPHA1, alpha2=ALPHA2, rollout_mode=mode,
        update_schedule="per_step", ratio_level=ratio_level, clip_eps=0.15, kl_beta=0.05,
    )
    result = tgrpo.train(_scripted_envs(), ScriptedRows(5), cfg)
    adv, mask, weights = _expected(mode)
    # Algorithm 1: one optimizer step per time step t, over the envs whose trajectory has a step t.
    assert len(loss_calls) == mask.shape[1] == result.history[0]["charts/group_length"]
    for t, call in enumerate(loss_calls):
        envs_at_t = np.flatnonzero(mask[:, t])
        np.testing.assert_allclose(call["advantages"], adv[envs_at_t, t], rtol=1e-6, atol=1e-7, err_msg=f"t={t}")
        np.testing.assert_allclose(call["weights"], weights[envs_at_t], rtol=1e-6, err_msg=f"t={t}")
        assert call["ratio_level"] == ratio_level and call["clip_eps"] == 0.15 and call["kl_beta"] == 0.05
        assert call["has_ref"]


def test_minibatch_updates_see_every_sample_once_per_epoch(tmp_path, loss_calls):
    cfg = small_config(
        tmp_path, iterations=1, max_steps=6, alpha1=ALPHA1, alpha2=ALPHA2, rollout_mode="independent",
        update_schedule="minibatch", minibatch_size=4, epochs=2, kl_beta=0.0,
    )
    tgrpo.train(_scripted_envs(), ScriptedRows(5), cfg)
    adv, mask, weights = _expected("independent")
    env_idx, step_idx = np.nonzero(mask)
    expected = sorted(zip(adv[env_idx, step_idx].round(6), weights[env_idx].round(6), strict=True))
    assert [c["n"] for c in loss_calls] == [4, 4, 1] * 2  # 9 samples, minibatches of 4, two epochs
    for epoch in range(2):
        calls = loss_calls[3 * epoch : 3 * epoch + 3]
        got = sorted(
            (round(float(a), 6), round(float(w), 6))
            for c in calls
            for a, w in zip(c["advantages"], c["weights"], strict=True)
        )
        assert got == [(float(a), float(w)) for a, w in expected]
        assert not any(c["has_ref"] for c in calls)
