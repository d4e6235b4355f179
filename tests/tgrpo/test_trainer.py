"""tgrpo.train: it learns, it logs, every variant runs."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from tgrpo_fakes import make_vec_env, small_config

import tgrpo


def _success(envs, policy):
    torch.manual_seed(99)  # the evaluation samples tokens
    return tgrpo.evaluate(envs, policy, episodes=64, max_steps=10, temperature=1.0, seed=123)["success_rate"]


@pytest.mark.parametrize("schedule", ["per_step", "minibatch"])
def test_tgrpo_learns_staged_task(tmp_path, schedule):
    # a random token policy passes each of the 3 stages with probability ~0.2 per step
    envs = make_vec_env(8, threshold=0.6)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    before = _success(envs, policy)
    cfg = small_config(tmp_path, iterations=10, update_schedule=schedule, minibatch_size=32, seed=0)
    result = tgrpo.train(envs, policy, cfg)
    after = _success(envs, policy)
    assert before < 0.5
    assert after >= 0.8 and after >= before + 0.4, (before, after)
    assert len(result.history) == 10


def test_outputs_and_metric_names(tmp_path):
    envs = make_vec_env(4)
    cfg = small_config(tmp_path, iterations=3, log_formats=("jsonl", "csv", "tensorboard"), plot=True)
    result = tgrpo.train(envs, None, cfg)
    out = result.output_dir
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for name in (
        "charts/success_rate",
        "charts/mean_return",
        "losses/loss",
        "losses/clip_fraction",
        "losses/approx_kl",
        "losses/ref_kl",
        "losses/entropy_token",
        "losses/entropy_action",
        "losses/kl_beta",
        "losses/early_stop",
        "charts/optimizer_steps",
        "losses/grad_norm",
        "time/rollout_s",
        "time/forward_s",
        "time/update_s",
    ):
        assert name in rows[0] and np.isfinite(rows[0][name]), name
    assert (out / "metrics.csv").read_text().count("\n") == 4
    assert any((out / "tb").iterdir())
    if importlib.util.find_spec("matplotlib") is not None:  # the plot is optional (the `plots` extra)
        assert (out / "training_curve.png").stat().st_size > 0
    else:
        assert not (out / "training_curve.png").exists()
    ckpt = tgrpo.load_checkpoint(out / "checkpoint.pt")
    assert ckpt["iteration"] == 2 and ckpt["config"]["iterations"] == 3
    # per-step schedule: one optimizer step per time step of the group
    assert rows[0]["losses/optimizer_steps"] == rows[0]["charts/group_length"]


@pytest.mark.parametrize(
    "overrides",
    [
        dict(alpha1=1.0, alpha2=0.0),  # step-only
        dict(alpha1=0.0, alpha2=1.0),  # trajectory-only
        dict(advantage_mode="grpo_success"),
        dict(ratio_level="action"),
        dict(rollout_mode="independent", update_schedule="minibatch", epochs=2, minibatch_size=16),
        dict(kl_beta=0.0, max_grad_norm=None),
    ],
)
def test_variants_run_and_update(tmp_path, overrides):
    envs = make_vec_env(4, threshold=0.5)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    result = tgrpo.train(envs, policy, small_config(tmp_path, iterations=2, **overrides))
    assert all(np.isfinite(r["losses/loss"]) for r in result.history)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.trainable_parameters(), strict=True))


def test_grpo_success_advantages_use_success_only():
    envs = make_vec_env(2, threshold=0.5)

    class Fixed(tgrpo.MLPTokenPolicy):
        def sample(self, obs, instructions, temperature=1.0):
            return torch.tensor([[255] * 7, [0] * 7]), torch.zeros(2, 7)

    g = tgrpo.collect_group(envs, Fixed(5), max_steps=10, seed=0)
    adv = tgrpo.compute_advantages(g, tgrpo.TGRPOConfig(advantage_mode="grpo_success"))
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(adv, [[s] * 3, [-s] * 3])


def test_eval_hook_called_on_schedule(tmp_path):
    calls = []

    def hook(policy, iteration):
        calls.append(iteration)
        return {"score": float(iteration)}

    result = tgrpo.train(
        make_vec_env(2), None, small_config(tmp_path, iterations=5, eval_interval=2), eval_fn=hook
    )
    assert calls == [1, 3, 4]
    assert [r.get("eval/score") for r in result.history] == [None, 1.0, None, 3.0, 4.0]


class _RowTokens(tgrpo.MLPTokenPolicy):
    """Row i of every batch emits ``rows[i]`` (greedy or not); records the observations it is given."""

    def __init__(self, obs_dim, rows, **kw):
        super().__init__(obs_dim, **kw)
        self.rows = rows
        self.seen = []

    def sample(self, obs, instructions, temperature=1.0):
        self.seen.append(obs)
        n = len(instructions)
        return torch.tensor(self.rows[:n]), torch.zeros(n, 7)


def test_default_eval_hook(tmp_path):
    # sub-env 0 passes every stage (a success after 3 steps), sub-env 1 never passes one
    policy = _RowTokens(5, [[255] * 7, [0] * 7])
    result = tgrpo.train(make_vec_env(2), policy, small_config(tmp_path, iterations=1, eval_interval=1))
    assert result.history[-1]["eval/success_rate"] == 0.5
    assert result.history[-1]["charts/success_rate"] == 0.5


def test_dict_observations(tmp_path):
    envs = make_vec_env(3, dict_obs=True)
    policy = _RowTokens(5, [[255] * 7] * 3, obs_keys=("state",))
    before = [p.detach().clone() for p in policy.trainable_parameters()]
    result = tgrpo.train(envs, policy, small_config(tmp_path, iterations=1))
    # every sub-env succeeds at step 3; the policy saw the Dict observations batched per key
    assert result.history[0]["charts/group_length"] == 3 and result.history[0]["charts/success_rate"] == 1.0
    assert all(set(obs) == {"state"} and obs["state"].shape == (3, 5) for obs in policy.seen)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy.trainable_parameters(), strict=True))


def test_policy_must_follow_protocol(tmp_path):
    with pytest.raises(TypeError, match="TokenActionPolicy"):
        tgrpo.train(make_vec_env(2), object(), small_config(tmp_path))
