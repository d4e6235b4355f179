"""The group ends, and success is counted, on the boolean info key the config names."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tgrpo_fakes import StagedTokenEnv, small_config

import tgrpo
from tgrpo.baselines import PPOConfig
from tgrpo.rollout import collect_group


class HalfwayEnv(StagedTokenEnv):
    """The fake staged env with one more boolean fact: ``halfway`` once two stages are passed."""

    def _info(self):
        return {**super()._info(), "halfway": self.stage >= 2}


class FixedTokens(tgrpo.MLPTokenPolicy):
    def __init__(self, rows):
        super().__init__(obs_dim=5, seed=0)
        self.table = torch.tensor([[r] * 7 for r in rows])

    def sample(self, obs, instructions, temperature=1.0):
        return self.table.clone(), torch.zeros(self.table.shape)


def make_envs(n=3):
    return gym.vector.SyncVectorEnv([lambda: HalfwayEnv(threshold=0.5) for _ in range(n)])


def test_paper_group_ends_at_the_first_success_by_the_given_key():
    policy = FixedTokens([255, 0, 0])  # env 0 passes a stage every step: halfway at step 2, success at 3
    default = collect_group(make_envs(), policy, max_steps=50, mode="paper", seed=0)
    halfway = collect_group(make_envs(), policy, max_steps=50, mode="paper", seed=0, success_key="halfway")
    assert default.length == 3 and halfway.length == 2
    np.testing.assert_array_equal(halfway.success, [True, False, False])
    # A key no sub-env reports never counts as success: the group runs to the cap.
    missing = collect_group(make_envs(), policy, max_steps=6, mode="paper", seed=0, success_key="no_such_key")
    assert missing.length == 6 and not missing.success.any()


def test_trainer_reads_success_from_the_configured_key(tmp_path):
    envs = make_envs(2)
    policy = FixedTokens([255, 255])
    result = tgrpo.train(envs, policy, small_config(tmp_path, iterations=1, success_key="halfway", lr=1e-3))
    row = result.history[-1]
    assert row["charts/success_rate"] == 1.0 and row["charts/group_length"] == 2


@pytest.mark.parametrize("bad", ["", None, 3])
def test_success_key_must_name_an_info_key(bad):
    with pytest.raises(tgrpo.ConfigError, match=f"success_key={bad!r} is not accepted"):
        tgrpo.TGRPOConfig(success_key=bad).validate()
    with pytest.raises(tgrpo.ConfigError, match=f"success_key={bad!r} is not accepted"):
        PPOConfig(success_key=bad)
