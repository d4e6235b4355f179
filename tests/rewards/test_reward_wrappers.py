"""StagedRewardWrapper on a tiny env that replays facts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rewards import MissingInfoKeysError, RewardConfig, StagedRewardWrapper
from rewards.testing import LIFT_AND_DROP, PICK_AND_PLACE, START_FACTS, FactsReplayEnv, facts


def run(env, steps):
    """(reward, terminated, truncated, info) of ``steps`` steps, resetting after each episode."""
    out = []
    env.reset(seed=0)
    for _ in range(steps):
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((reward, terminated, truncated, info))
        if terminated or truncated:
            env.reset()
    return out


def test_staged_episode():
    env = StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE))
    obs, info = env.reset(seed=0)
    assert info["stage"] == 0
    steps = run(env, len(PICK_AND_PLACE))
    assert [r for r, *_ in steps] == pytest.approx([-2, 2, 4, 4, 8, 9, 12, 12, 16])
    assert [info["stage"] for *_, info in steps] == [0, 1, 2, 2, 3, 3, 3, 3, 4]
    assert steps[-1][1] is True  # the env still decides termination
    # The env's own reward stays in the info; the terms sum to the reward.
    assert [info["env_reward"] for *_, info in steps] == [0.0] * 8 + [1.0]
    for reward, _, _, info in steps:
        assert isinstance(reward, float)
        assert isinstance(info["stage"], int)
        terms = {key: value for key, value in info.items() if key.startswith("reward/")}
        assert set(terms) == {
            "reward/stage_value",
            "reward/basket_approach",
            "reward/basket_above",
            "reward/drop",
            "reward/basket_disturbed",
        }
        assert sum(terms.values()) == pytest.approx(reward)
        assert "target_lift" in info  # the env's facts are kept


def test_memory_is_reset_between_episodes():
    # Each episode ends with the target dropped; without a reset of the memory the next episode's first
    # steps (target on the table, gripper far) would count as drops (-4) instead of stage 0 (-2).
    env = StagedRewardWrapper(FactsReplayEnv(LIFT_AND_DROP))
    rewards = [r for r, *_ in run(env, 3 * len(LIFT_AND_DROP))]
    assert rewards == [-2.0, 4.0, 8.0, -4.0, -4.0] * 3


@pytest.mark.parametrize(
    ("mode", "expected", "terms"),
    [
        ("sparse", [0.0] * 8 + [1.0], {"reward/success", "reward/basket_disturbed"}),
        (
            "dense",
            None,
            {"reward/reach", "reward/grasp", "reward/lift", "reward/place", "reward/success", "reward/basket_disturbed"},
        ),
    ],
)
def test_other_modes_keep_the_stage(mode, expected, terms):
    env = StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE), mode=mode)
    steps = run(env, len(PICK_AND_PLACE))
    rewards = [r for r, *_ in steps]
    if expected is not None:
        assert rewards == expected
    else:
        assert rewards[-1] == RewardConfig().dense_success_reward
        assert rewards[0] < rewards[1] < rewards[2] < rewards[3] < rewards[4]
    assert [info["stage"] for *_, info in steps] == [0, 1, 2, 2, 3, 3, 3, 3, 4]
    assert {key for key in steps[0][3] if key.startswith("reward/")} == terms


def test_config_is_used():
    env = StagedRewardWrapper(FactsReplayEnv(LIFT_AND_DROP), config=RewardConfig(drop_reward=-10.0))
    assert [r for r, *_ in run(env, len(LIFT_AND_DROP))][-1] == -10.0


def test_missing_keys_fail_at_reset_with_their_names():
    reset_facts = {key: value for key, value in START_FACTS.items() if key != "target_grasped"}
    env = StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE, reset_facts=reset_facts))
    with pytest.raises(
        MissingInfoKeysError, match=r"reset\(\) lacks the key\(s\) \['target_grasped'\]"
    ) as error:
        env.reset()
    assert "docs/info_contract.md" in str(error.value)


def test_missing_keys_fail_at_step_with_their_names():
    step_facts = {
        key: value for key, value in START_FACTS.items() if key not in ("is_success", "target_in_basket")
    }
    env = StagedRewardWrapper(FactsReplayEnv([step_facts]))
    env.reset()
    with pytest.raises(
        MissingInfoKeysError, match=r"step\(\) lacks the key\(s\) \['is_success', 'target_in_basket'\]"
    ):
        env.step(env.action_space.sample())


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="Unknown reward mode 'staged_v2'"):
        StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE), mode="staged_v2")


def test_wrapping_twice_is_rejected():
    env = StagedRewardWrapper(StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE)))
    with pytest.raises(ValueError, match=r"already holds \['stage'\].*wrapped by a reward wrapper twice"):
        env.reset()


def test_record_episode_statistics_composes():
    env = gym.wrappers.RecordEpisodeStatistics(StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE)))
    steps = run(env, len(PICK_AND_PLACE))
    episode = steps[-1][3]["episode"]
    assert episode["r"] == pytest.approx(sum([-2, 2, 4, 4, 8, 9, 12, 12, 16]))
    assert episode["l"] == len(PICK_AND_PLACE)


def test_flatten_observation_and_time_limit_compose():
    env = gym.wrappers.FlattenObservation(
        StagedRewardWrapper(gym.wrappers.TimeLimit(FactsReplayEnv(LIFT_AND_DROP), max_episode_steps=2))
    )
    steps = run(env, 4)
    assert [r for r, *_ in steps] == [-2.0, 4.0, -2.0, 4.0]
    assert [truncated for _, _, truncated, _ in steps] == [False, True, False, True]


def test_numpy_scalars_in_info_are_accepted():
    step_facts = {key: np.asarray(value) for key, value in facts(eef_to_target=0.1).items()}
    env = StagedRewardWrapper(FactsReplayEnv([step_facts]))
    assert run(env, 1)[0][0] == 2.0
