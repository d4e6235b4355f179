"""tgrpo.train on a RayVectorEnv, unchanged: the same run as on the default async vector env."""

import numpy as np
import pytest
import torch

import tgrpo
from libero_tgrpo.envs import make_train_envs

ray = pytest.importorskip("ray", reason="RayVectorEnv needs the 'ray' extra")


pytestmark = pytest.mark.usefixtures("local_ray")  # tests/conftest.py


def _train(tmp_path, vectorization):
    envs = make_train_envs(2, 2, vectorization=vectorization, max_episode_steps=6)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cfg = tgrpo.TGRPOConfig(iterations=2, max_steps=6, seed=0, output_dir=str(tmp_path / vectorization),
                                progress_bar=False, plot=False, log_formats=("jsonl",))
        result = tgrpo.train(envs, None, cfg)
    finally:
        torch.set_num_threads(threads)
        envs.close()
    return result


def test_tgrpo_train_on_ray_matches_async(tmp_path):
    on_ray = _train(tmp_path, "ray")
    on_async = _train(tmp_path, "async")
    assert len(on_ray.history) == len(on_async.history) == 2
    for r, a in zip(on_ray.history, on_async.history):
        compared = {k: v for k, v in a.items() if not k.startswith("time/")}
        assert "charts/mean_return" in compared and "losses/loss" in compared
        assert {k: r[k] for k in compared} == compared
    for p, q in zip(on_ray.policy.parameters(), on_async.policy.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())
