"""--image-size reaches the evaluation envs as well as the training envs (a Hugging Face VLA's camera size)."""

import pytest

from libero_tgrpo import stages
from libero_tgrpo.config import EvalConfig, HFConfig, PipelineConfig


class _Made(Exception):
    """Raised by the recording stand-in of make_eval_envs, so that no episode runs."""


def _cfg(tmp_path, image_size):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")  # a model directory as far as the options are concerned
    return PipelineConfig(policy=str(model), hf=HFConfig(image_size=image_size),
                          eval=EvalConfig(envs=1, states=(0,)))


def test_shared_eval_envs_have_the_image_size(tmp_path):
    with stages.SharedEvalEnvs(_cfg(tmp_path, 48)) as shared:
        space = shared.get().single_observation_space
        assert space["agentview"].shape == (48, 48, 3)


@pytest.mark.parametrize("image_size", [48, None])
def test_run_eval_makes_its_envs_with_the_image_size(tmp_path, monkeypatch, image_size):
    seen = {}

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise _Made

    monkeypatch.setattr(stages, "make_eval_envs", record)
    with pytest.raises(_Made):
        stages.run_eval(None, 4, **stages.eval_config_kwargs(_cfg(tmp_path, image_size)))
    assert seen.get("image_size") == image_size
