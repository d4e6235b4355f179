"""Non-finite losses and gradients never reach the weights or a checkpoint; k3_kl stays finite."""

import math

import numpy as np
import pytest
import torch
from tgrpo_fakes import StagedTokenEnv, make_vec_env, small_config

import tgrpo
from tgrpo.baselines import PPOConfig, train_ppo
from tgrpo.config import ConfigError
from tgrpo.loss import K3_LOG_RATIO_BOUND, k3_kl
from tgrpo.nonfinite import NonFiniteError, NonFiniteGuard


def _finite(state):
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


class _NaNLogProbs(tgrpo.MLPTokenPolicy):
    """Returns nan log-probs on the calls of ``log_probs`` numbered in ``bad`` (1-based)."""

    bad: set = set()
    calls = 0

    def log_probs(self, obs, instructions, tokens, temperature=1.0):
        lp, ent = super().log_probs(obs, instructions, tokens, temperature)
        type(self).calls += 1
        if type(self).calls in self.bad:
            lp = lp * float("nan")
        return lp, ent


def _nan_policy(bad):
    _NaNLogProbs.bad, _NaNLogProbs.calls = set(bad), 0
    return _NaNLogProbs.from_space(StagedTokenEnv().observation_space, seed=0)


def test_the_reported_lr_0_1_run_keeps_finite_weights_and_checkpoint(tmp_path):
    """The issue's reproduction: before, the first checkpoint held nan weights and iteration 2 crashed."""
    result = tgrpo.train(make_vec_env(4), None, small_config(tmp_path, lr=0.1, iterations=6))
    assert len(result.history) == 6
    assert all(math.isfinite(row["losses/loss"]) for row in result.history)
    assert _finite(result.policy.state_dict())
    assert _finite(tgrpo.load_checkpoint(result.checkpoint)["policy"])


def test_non_finite_steps_are_skipped_counted_and_leave_the_weights_alone(tmp_path):
    # per-step schedule, max_steps=10: iteration 0 makes up to 10 optimizer steps; steps 2 and 3 are poisoned
    policy = _nan_policy({2, 3})
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg = small_config(tmp_path, iterations=1, kl_beta=0.0, max_nonfinite_skips=3)
    result = tgrpo.train(make_vec_env(2), policy, cfg)
    row = result.history[0]
    assert row["losses/nonfinite_skips"] == 2
    assert row["losses/optimizer_steps"] == _NaNLogProbs.calls - 2
    assert math.isfinite(row["losses/loss"]) and math.isfinite(row["losses/grad_norm"])
    after = policy.state_dict()
    assert _finite(after) and any(not torch.equal(before[k], after[k]) for k in after)
    assert _finite(tgrpo.load_checkpoint(result.checkpoint)["policy"])


def test_too_many_skips_in_a_row_stop_with_a_clear_error_and_keep_the_last_checkpoint(tmp_path):
    good = tgrpo.train(make_vec_env(2), None, small_config(tmp_path, iterations=2, kl_beta=0.0))
    saved = tgrpo.load_checkpoint(good.checkpoint)
    policy = _nan_policy(set(range(1, 10_000)))  # every step from now on
    cfg = small_config(tmp_path, iterations=4, kl_beta=0.0, resume=True, max_nonfinite_skips=3)
    with pytest.raises(NonFiniteError, match=r"3 optimizer steps in a row had a non-finite loss.*max_nonfinite_skips"):
        tgrpo.train(make_vec_env(2), policy, cfg)
    assert _NaNLogProbs.calls == 3  # stopped at the third, before any more work
    kept = tgrpo.load_checkpoint(good.checkpoint)
    assert kept["iteration"] == saved["iteration"] == 1
    for k, v in saved["policy"].items():
        assert torch.equal(kept["policy"][k], v)
    for k, v in policy.state_dict().items():  # the poisoned steps changed nothing
        assert torch.equal(v, saved["policy"][k])


def test_ppo_skips_non_finite_steps_and_stops_after_too_many(tmp_path):
    policy = _nan_policy({1})
    result = train_ppo(
        make_vec_env(2), policy, config=PPOConfig(iterations=1, max_steps=8, epochs=2, minibatch_size=4,
                                                  output_dir=str(tmp_path / "a"), progress_bar=False, plot=False)
    )
    assert result.history[0]["losses/nonfinite_skips"] == 1
    assert _finite(tgrpo.load_checkpoint(result.checkpoint)["policy"])
    policy = _nan_policy(set(range(1, 10_000)))
    with pytest.raises(NonFiniteError, match="2 optimizer steps in a row"):
        train_ppo(make_vec_env(2), policy, config=PPOConfig(iterations=1, max_steps=8, minibatch_size=4,
                                                            max_nonfinite_skips=2, output_dir=str(tmp_path / "b"),
                                                            progress_bar=False, plot=False))
    assert not (tmp_path / "b" / "checkpoint.pt").exists()


def test_max_nonfinite_skips_is_validated():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="max_nonfinite_skips"):
            tgrpo.TGRPOConfig(max_nonfinite_skips=bad)
        with pytest.raises(ConfigError, match="max_nonfinite_skips"):
            PPOConfig(max_nonfinite_skips=bad)


def test_guard_counts_in_a_row_and_resets_on_a_good_step():
    guard = NonFiniteGuard(2)
    assert guard.ok(1.0, 1.0)
    assert not guard.ok(float("nan"), 1.0)
    assert guard.ok(0.5, 2.0) and guard.in_a_row == 0
    assert not guard.ok(1.0, float("inf"))
    with pytest.raises(NonFiniteError, match="2 optimizer steps in a row"):
        guard.ok(float("-inf"), 1.0)
    assert guard.take_count() == 3 and guard.take_count() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_k3_kl_is_bounded_and_finite_with_a_finite_gradient(dtype):
    logp = torch.tensor([-200.0, -1.0, 0.0], dtype=dtype, requires_grad=True)
    ref = torch.tensor([0.0, -1.0, -200.0], dtype=dtype)
    kl = k3_kl(logp, ref)
    bound = math.exp(K3_LOG_RATIO_BOUND) - K3_LOG_RATIO_BOUND - 1
    assert torch.isfinite(kl).all()
    assert kl[0].item() == pytest.approx(bound, rel=1e-6)
    assert kl[1].item() == 0.0
    assert kl[2].item() == pytest.approx(math.exp(-K3_LOG_RATIO_BOUND) + K3_LOG_RATIO_BOUND - 1, rel=1e-6)
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all()
    # inside the bound it is the exact estimator
    d = np.linspace(-5, 5, 11)
    exact = np.exp(d) - d - 1
    got = k3_kl(torch.zeros(11), torch.tensor(d, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    def corrupt(policy, k):  # an eval hook that breaks the weights after iteration 1
        if k == 1:
            with torch.no_grad():
                next(iter(policy.trainable_parameters()))[0, 0] = float("nan")
        return {}

    cfg = small_config(tmp_path, iterations=3, eval_interval=1)
    with pytest.raises(NonFiniteError, match="after iteration 1 has non-finite values.*not saved"):
        tgrpo.train(make_vec_env(2), None, cfg, eval_fn=corrupt)
    kept = tgrpo.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert kept["iteration"] == 0 and _finite(kept["policy"])
