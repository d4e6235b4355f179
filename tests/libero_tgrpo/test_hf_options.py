"""The Hugging Face decoding options of the pipeline: --static-cache, --compile-decoding and --merged-sampling, on a
tiny LLaVA."""

import pytest

pytest.importorskip("transformers", reason="needs the hf extra", exc_type=ModuleNotFoundError)
pytest.importorskip("peft", reason="needs the hf extra", exc_type=ModuleNotFoundError)

from tgrpo.policies import save_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llava(tmp_path_factory.mktemp("tiny_vla"))


def test_static_decoding_flags_reach_the_policy_through_the_command_line(model_dir):
    """``--static-cache`` / ``--compile-decoding`` set HFConfig, its policy keyword arguments and the built policy;
    they are not part of a run's identity (the decoded tokens are the dynamic cache's)."""
    from libero_tgrpo.cli import parse
    from libero_tgrpo.policies import build_policy
    from libero_tgrpo.rundir import NOT_IDENTITY

    cfg = parse(["train", "--policy", str(model_dir), "--static-cache", "--device", "cpu", "--dtype", "float32"])[1]
    cfg = cfg.options
    assert cfg.hf.static_cache and not cfg.hf.compile_decoding
    kwargs = cfg.hf.policy_kwargs()
    assert kwargs["static_cache"] is True and kwargs["compile_decoding"] is False
    policy, spec = build_policy(str(model_dir), None, **kwargs)
    assert policy.static_cache and not policy.compile_decoding and spec["static_cache"] is True
    assert parse(["train", "--compile-decoding"])[1].options.hf.compile_decoding
    prefill = parse(["train", "--compile-prefill"])[1].options.hf
    assert prefill.compile_prefill and prefill.policy_kwargs()["compile_prefill"] is True
    assert {"hf.static_cache", "hf.compile_decoding", "hf.compile_prefill"} <= NOT_IDENTITY
    policy.set_decoding()
    assert not policy.static_cache
    with pytest.raises(ValueError, match="use_cache=False"):
        policy.use_cache = False
        policy.set_decoding(compile_decoding=True)


def test_merged_sampling_flag_reaches_the_policy_through_the_command_line(model_dir):
    """``--merged-sampling`` sets HFConfig, its policy keyword arguments and the built policy; like the other
    decoding options it may change when a run is resumed."""
    from libero_tgrpo.cli import parse
    from libero_tgrpo.policies import build_policy
    from libero_tgrpo.rundir import NOT_IDENTITY

    cfg = parse(["train", "--policy", str(model_dir), "--merged-sampling", "--device", "cpu",
                 "--dtype", "float32"])[1].options
    assert cfg.hf.merged_sampling
    kwargs = cfg.hf.policy_kwargs()
    assert kwargs["merged_sampling"] is True
    policy, spec = build_policy(str(model_dir), None, **kwargs)
    assert policy.merged_sampling and spec["merged_sampling"] is True
    assert not parse(["train"])[1].options.hf.merged_sampling
    assert "hf.merged_sampling" in NOT_IDENTITY
