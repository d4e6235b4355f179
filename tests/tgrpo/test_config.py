"""TGRPOConfig validation: broken values and combinations fail with a fix-it message."""

import pytest
from tgrpo_fakes import make_vec_env

import tgrpo
from tgrpo.config import ConfigError, TGRPOConfig


@pytest.mark.parametrize(
    "kwargs, names",
    [
        (dict(alpha1=0.0, alpha2=0.0), ["alpha1=0", "alpha2=0"]),
        (dict(alpha1=-1.0), ["alpha1=-1.0", ">= 0"]),
        (dict(lr=-1e-3), ["lr=-0.001", "> 0"]),
        (dict(lr=float("nan")), ["lr=nan"]),
        (dict(clip_eps=1.5), ["clip_eps=1.5", "(0, 1)"]),
        (dict(clip_eps=0.0), ["clip_eps=0.0"]),
        (dict(kl_beta=-0.1), ["kl_beta=-0.1"]),
        (dict(temperature=0.0), ["temperature=0.0", "> 0"]),
        (dict(ratio_level="sequence"), ["ratio_level='sequence'", "'token'", "'action'"]),
        (dict(update_schedule="ppo"), ["update_schedule='ppo'", "'per_step'", "'minibatch'"]),
        (dict(rollout_mode="async"), ["rollout_mode='async'", "'paper'", "'independent'"]),
        (dict(advantage_mode="gae"), ["advantage_mode='gae'", "'tgrpo'", "'grpo_success'"]),
        (dict(log_formats=("jsonl", "mlflow")), ["'mlflow'", "'tensorboard'", "'wandb'"]),
        (dict(max_steps=0), ["max_steps=0", ">= 1"]),
        (dict(iterations=2.5), ["iterations=2.5"]),
        (dict(epochs=0), ["epochs=0"]),
        (dict(minibatch_size=0), ["minibatch_size=0"]),
        (dict(checkpoint_interval=-1), ["checkpoint_interval=-1"]),
        (dict(max_grad_norm=0.0), ["max_grad_norm=0.0"]),
        (dict(group_size=1), ["group_size=1", "at least 2"]),
        (dict(output_dir=""), ["output_dir"]),
    ],
)
def test_bad_values_are_rejected_with_fix(kwargs, names):
    with pytest.raises(ConfigError) as exc:
        TGRPOConfig(**kwargs)
    msg = str(exc.value)
    for name in names:
        assert name in msg
    assert "Fix" in msg
    assert isinstance(exc.value, ValueError)


def test_defaults_and_variants_are_valid():
    TGRPOConfig()
    TGRPOConfig(alpha1=1.0, alpha2=0.0)  # step-only
    TGRPOConfig(alpha1=0.0, alpha2=1.0)  # trajectory-only
    TGRPOConfig(alpha1=0.0, alpha2=0.0, advantage_mode="grpo_success")  # alphas unused
    paper = TGRPOConfig.paper(alpha1=10.0, alpha2=1.0)
    assert paper.lr == 1e-5 and paper.max_steps == 200 and paper.update_schedule == "per_step"


def test_env_must_form_a_group(tmp_path):
    with pytest.raises(ConfigError, match="num_envs=1.*at least 2"):
        tgrpo.train(make_vec_env(1), None, TGRPOConfig(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="group_size=4 but the vector env has num_envs=2"):
        TGRPOConfig(group_size=4).validate(num_envs=2)
    from tgrpo_fakes import StagedTokenEnv

    with pytest.raises(ConfigError, match="not a vector env"):
        tgrpo.train(StagedTokenEnv(), None, TGRPOConfig(output_dir=str(tmp_path)))


def test_learning_rate_resolution():
    policy = tgrpo.MLPTokenPolicy(3)
    assert TGRPOConfig().resolve_lr(policy) == policy.recommended_lr
    assert TGRPOConfig().resolve_lr(object()) == 1e-5
    assert TGRPOConfig(lr=3e-4).resolve_lr(policy) == 3e-4


def test_to_dict_round_trips():
    cfg = TGRPOConfig(alpha1=2.0, log_formats=["csv"])
    assert TGRPOConfig(**cfg.to_dict()) == cfg
