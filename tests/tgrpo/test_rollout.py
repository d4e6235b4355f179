"""Group rollouts from a Gymnasium vector env: modes, masks, autoreset, instructions."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from tgrpo_fakes import INSTRUCTION, StagedTokenEnv, make_vec_env

from tgrpo.policy import MLPTokenPolicy
from tgrpo.rollout import collect_group


class ScriptedPolicy(MLPTokenPolicy):
    """Emits fixed tokens per sub-env (row i of ``table`` for env i): deterministic rollouts."""

    def __init__(self, table):
        super().__init__(obs_dim=5, seed=0)
        self.table = torch.as_tensor(table)
        self.seen_instructions = []

    def sample(self, obs, instructions, temperature=1.0):
        self.seen_instructions.append(list(instructions))
        return self.table.clone(), torch.zeros(self.table.shape)


HIGH, LOW = 255, 0


def tokens(rows):
    return [[r] * 7 for r in rows]


def test_paper_mode_ends_group_at_first_success():
    envs = make_vec_env(3, threshold=0.5)
    policy = ScriptedPolicy(tokens([HIGH, LOW, LOW]))  # env 0 passes a stage every step: success at step 3
    g = collect_group(envs, policy, max_steps=50, mode="paper", seed=0)
    assert g.length == 3 and g.mask.all()
    np.testing.assert_array_equal(g.success, [True, False, False])
    np.testing.assert_array_equal(g.rewards, [[1, 2, 3], [0, 0, 0], [0, 0, 0]])
    assert g.tokens.shape == (3, 3, 7) and g.old_logp.shape == (3, 3, 7)
    assert g.obs.shape == (3, 3, 5)  # [L, M, obs_dim]


def test_paper_mode_runs_to_cap_without_success():
    g = collect_group(make_vec_env(2), ScriptedPolicy(tokens([LOW, LOW])), max_steps=7, mode="paper", seed=0)
    assert g.length == 7 and g.mask.all() and not g.success.any()


@pytest.mark.parametrize("autoreset", ["NextStep", "SameStep", "Disabled"])
def test_independent_mode_masks_and_autoreset(autoreset):
    envs = make_vec_env(3, autoreset_mode=autoreset, threshold=0.5, per_env=[{}, {"terminate_at": 2}, {}])
    policy = ScriptedPolicy(tokens([HIGH, LOW, LOW]))
    g = collect_group(envs, policy, max_steps=5, mode="independent", seed=0)
    assert g.length == 5
    np.testing.assert_array_equal(g.lengths, [3, 2, 5])
    np.testing.assert_array_equal(g.success, [True, False, False])
    np.testing.assert_array_equal(g.rewards[0], [1, 2, 3, 0, 0])  # nothing after the episode's end
    # observations after an episode's end are masked; every valid observation belongs to the first episode
    assert g.mask[0, :3].all() and not g.mask[0, 3:].any()
    assert not g.mask[1, 2:].any()
    # stage one-hot of env 0 at steps 0..2 is stage 0, 1, 2 (no reset leaked in)
    np.testing.assert_array_equal(g.obs[:3, 0, :4].argmax(-1), [0, 1, 2])


def test_independent_mode_handles_truncation():
    envs = make_vec_env(2, per_env=[{"truncate_at": 4}, {}])
    g = collect_group(envs, ScriptedPolicy(tokens([LOW, LOW])), max_steps=6, mode="independent", seed=0)
    np.testing.assert_array_equal(g.lengths, [4, 6])


def test_same_step_success_read_from_final_info():
    envs = make_vec_env(2, autoreset_mode="SameStep", threshold=0.5)
    g = collect_group(envs, ScriptedPolicy(tokens([HIGH, LOW])), max_steps=10, mode="paper", seed=0)
    assert g.length == 3 and g.success.tolist() == [True, False]


def test_instructions_from_info_and_get_attr():
    envs = make_vec_env(2, per_env=[{"instruction": "a"}, {"instruction": "b"}])
    policy = ScriptedPolicy(tokens([LOW, LOW]))
    g = collect_group(envs, policy, max_steps=2, seed=0)
    assert policy.seen_instructions[0] == ["a", "b"]
    assert g.instructions.shape == (2, 2) and list(g.instructions[1]) == ["a", "b"]

    class NoInfoInstruction(gym.Wrapper):
        def reset(self, **kw):
            obs, info = self.env.reset(**kw)
            info.pop("instruction")
            return obs, info

        def step(self, action):
            out = self.env.step(action)
            out[4].pop("instruction")
            return out

    envs = gym.vector.SyncVectorEnv([lambda: NoInfoInstruction(StagedTokenEnv())] * 2)
    policy = ScriptedPolicy(tokens([LOW, LOW]))
    collect_group(envs, policy, max_steps=2, seed=0)
    assert policy.seen_instructions[0] == [INSTRUCTION, INSTRUCTION]


def test_batch_gathers_samples():
    g = collect_group(make_vec_env(3), MLPTokenPolicy(5, seed=0), max_steps=4, seed=0)
    obs, instr = g.batch(np.array([2, 0]), np.array([3, 1]))
    np.testing.assert_array_equal(obs, np.stack([g.obs[3, 2], g.obs[1, 0]]))
    assert instr == [INSTRUCTION, INSTRUCTION]


def test_seeded_rollouts_are_reproducible():
    envs = make_vec_env(3)
    torch.manual_seed(0)
    a = collect_group(envs, MLPTokenPolicy(5, seed=0), max_steps=5, seed=1)
    torch.manual_seed(0)
    b = collect_group(envs, MLPTokenPolicy(5, seed=0), max_steps=5, seed=1)
    assert torch.equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.obs, b.obs)


def test_non_finite_rewards_and_bad_actions_raise():
    class NaNReward(gym.Wrapper):
        def step(self, action):
            obs, r, te, tr, info = self.env.step(action)
            return obs, float("nan"), te, tr, info

    envs = gym.vector.SyncVectorEnv([lambda: NaNReward(StagedTokenEnv())] * 2)
    with pytest.raises(ValueError, match="non-finite rewards"):
        collect_group(envs, MLPTokenPolicy(5, seed=0), max_steps=3, seed=0)

    class SixDof(gym.ActionWrapper):
        def __init__(self, env):
            super().__init__(env)
            self.action_space = gym.spaces.Box(-1, 1, (6,), np.float32)

        def action(self, a):
            return np.append(a, 0.0)

    envs = gym.vector.SyncVectorEnv([lambda: SixDof(StagedTokenEnv())] * 2)
    with pytest.raises(ValueError, match="env expects"):
        collect_group(envs, MLPTokenPolicy(5, seed=0), max_steps=3, seed=0)
    with pytest.raises(ValueError, match="mode"):
        collect_group(make_vec_env(2), MLPTokenPolicy(5, seed=0), max_steps=3, mode="async")
