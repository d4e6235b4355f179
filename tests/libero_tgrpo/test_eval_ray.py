"""`libero-tgrpo eval --vectorization ray`: the evaluation's episodes run on Ray actors, with the records of a
local (async) evaluation."""

import json

import pytest

from libero_tgrpo.cli import main

ray = pytest.importorskip("ray", reason="--vectorization ray needs the 'ray' extra")


def test_eval_on_ray_actors_gives_the_records_of_a_local_evaluation(local_ray, demos, tmp_path):
    from libero_tgrpo.config import SFTConfig
    from libero_tgrpo.policies import build_policy, save_policy
    from libero_tgrpo.sft import sft
    from libero_tgrpo.stages import observation_space

    policy, spec = build_policy("state", observation_space(4, "state"), seed=0, hidden=(32,))
    sft(policy, demos, SFTConfig(epochs=3), progress=False)  # a policy that moves the arm, so episodes differ by state
    path = save_policy(policy, spec, tmp_path / "policy.pt", task=4, obs_mode="state")
    results = {}
    for backend in ("async", "ray"):
        out = tmp_path / backend
        argv = ["eval", str(path), "--task", "4", "--states", "0,7,21", "--eval-max-steps", "20",
                "--output-dir", str(out), "--quiet", "--vectorization", backend]
        assert main(argv) == 0
        results[backend] = json.loads((out / "eval.json").read_text())
    assert results["ray"]["vector_env"] == "RayVectorEnv"
    assert results["async"]["vector_env"] == "LiberoAsyncVectorEnv"
    assert results["ray"]["episodes"] == results["async"]["episodes"]
    assert results["ray"]["env_steps"] == results["async"]["env_steps"] == 60
