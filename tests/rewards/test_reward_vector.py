"""StagedRewardVectorWrapper: per-sub-env results equal the single-env wrapper's, across autoreset modes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from rewards import MissingInfoKeysError, StagedRewardVectorWrapper, StagedRewardWrapper
from rewards.testing import LIFT_AND_DROP, PICK_AND_PLACE, START_FACTS, FactsReplayEnv, facts

# Sub-envs whose episodes have different lengths, so that their boundaries fall on different steps. The
# drop episodes end with the memory "was lifted" set: a memory not reset at the boundary would turn the
# next episode's first steps into drops.
EPISODES = [LIFT_AND_DROP, PICK_AND_PLACE, LIFT_AND_DROP[:3], [facts(eef_to_target=0.1)]]
STEPS = 23
TERM_KEYS = (
    "reward/stage_value",
    "reward/basket_approach",
    "reward/basket_above",
    "reward/drop",
    "reward/basket_disturbed",
)


def make_vector(autoreset=AutoresetMode.NEXT_STEP, episodes=EPISODES, vector_cls=SyncVectorEnv, **kwargs):
    env_fns = [lambda episode=episode: FactsReplayEnv(episode) for episode in episodes]
    return StagedRewardVectorWrapper(vector_cls(env_fns, autoreset_mode=autoreset), **kwargs)


def single_stream(episode, steps, autoreset_mode, **kwargs):
    """What sub-env ``i`` of the vector env should give, built from the single-env wrapper.

    Returns a list of (reward, stage, env_reward, terms, done) per vector step.
    """
    env = StagedRewardWrapper(FactsReplayEnv(episode), **kwargs)
    _, info = env.reset()
    out, reset_next = [], False
    while len(out) < steps:
        if reset_next:  # NEXT_STEP: the step after an episode's end is its reset step
            _, info = env.reset()
            out.append((0.0, info["stage"], 0.0, dict.fromkeys(out[-1][3], 0.0), False))
            reset_next = False
            continue
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
        terms = {key: value for key, value in info.items() if key.startswith("reward/")}
        out.append((reward, info["stage"], info["env_reward"], terms, done))
        if done:
            if autoreset_mode == AutoresetMode.NEXT_STEP:
                reset_next = True
            else:
                env.reset()
    return out


def vector_stream(envs, steps):
    """(rewards, infos) of ``steps`` vector steps after a reset."""
    envs.reset(seed=0)
    results = []
    for _ in range(steps):
        _, rewards, terminations, truncations, infos = envs.step(envs.action_space.sample())
        results.append((rewards, terminations | truncations, infos))
    return results


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_vector_equals_single_env_per_sub_env(mode):
    results = vector_stream(make_vector(mode), STEPS)
    for i, episode in enumerate(EPISODES):
        expected = single_stream(episode, STEPS, mode)
        for t, (rewards, done, infos) in enumerate(results):
            reward, stage, env_reward, terms, expected_done = expected[t]
            assert rewards[i] == pytest.approx(reward), (i, t)
            assert infos["stage"][i] == stage, (i, t)
            assert infos["env_reward"][i] == env_reward, (i, t)
            assert done[i] == expected_done, (i, t)
            assert set(terms) == set(TERM_KEYS)
            for key in TERM_KEYS:
                assert infos[key][i] == pytest.approx(terms[key]), (i, t, key)
                assert infos[f"_{key}"][i]


def test_next_step_boundary_by_hand():
    results = vector_stream(make_vector(AutoresetMode.NEXT_STEP, episodes=[LIFT_AND_DROP]), 7)
    rewards = [float(r[0]) for r, _, _ in results]
    # The episode ends with two drops; step 6 is the reset step (reward 0); step 7 starts afresh (-2, not -4).
    assert rewards == [-2.0, 4.0, 8.0, -4.0, -4.0, 0.0, -2.0]
    assert [int(infos["stage"][0]) for _, _, infos in results] == [0, 2, 3, 1, 0, 0, 0]


def test_same_step_boundary_by_hand():
    results = vector_stream(make_vector(AutoresetMode.SAME_STEP, episodes=[LIFT_AND_DROP]), 7)
    rewards = [float(r[0]) for r, _, _ in results]
    assert rewards == [-2.0, 4.0, 8.0, -4.0, -4.0, -2.0, 4.0]
    # The step that ends the episode also reports its stage and terms in final_info.
    final_info = results[4][2]["final_info"]
    assert final_info["_stage"].tolist() == [True]
    assert final_info["stage"].tolist() == [0]
    assert final_info["reward/drop"].tolist() == [-4.0]
    assert final_info["target_lift"][0] == 0.0  # the env's own final facts are kept


def test_disabled_autoreset_resets_memory_of_masked_sub_envs():
    envs = make_vector(AutoresetMode.DISABLED, episodes=[LIFT_AND_DROP, PICK_AND_PLACE])
    envs.reset(seed=0)
    rewards = []
    for _ in range(len(LIFT_AND_DROP)):
        _, r, terminations, truncations, _ = envs.step(envs.action_space.sample())
        rewards.append(r.tolist())
    assert (terminations | truncations).tolist() == [True, False]
    _, infos = envs.reset(options={"reset_mask": np.array([True, False])})
    assert infos["_stage"].tolist() == [True, False]
    _, r, *_ = envs.step(envs.action_space.sample())
    # Sub-env 0 starts afresh (-2, not a drop); sub-env 1 goes on with its episode (its 6th step: 9).
    assert r.tolist() == [-2.0, 9.0]
    assert [step[0] for step in rewards] == [-2.0, 4.0, 8.0, -4.0, -4.0]


def test_async_vector_env():
    envs = make_vector(AutoresetMode.NEXT_STEP, vector_cls=gym.vector.AsyncVectorEnv)
    try:
        results = vector_stream(envs, STEPS)
    finally:
        envs.close()
    for i, episode in enumerate(EPISODES):
        expected = [reward for reward, *_ in single_stream(episode, STEPS, AutoresetMode.NEXT_STEP)]
        assert [float(rewards[i]) for rewards, _, _ in results] == pytest.approx(expected)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_other_modes_equal_single_env(mode):
    results = vector_stream(make_vector(AutoresetMode.NEXT_STEP, mode=mode), STEPS)
    for i, episode in enumerate(EPISODES):
        expected = single_stream(episode, STEPS, AutoresetMode.NEXT_STEP, mode=mode)
        assert [float(r[i]) for r, _, _ in results] == pytest.approx([e[0] for e in expected])
        assert [int(infos["stage"][i]) for _, _, infos in results] == [e[1] for e in expected]


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
def test_record_episode_statistics_composes(mode):
    envs = gym.wrappers.vector.RecordEpisodeStatistics(make_vector(mode))
    results = vector_stream(envs, STEPS)
    for i, episode in enumerate(EPISODES):
        single = gym.wrappers.RecordEpisodeStatistics(StagedRewardWrapper(FactsReplayEnv(episode)))
        single.reset()
        expected = []
        while len(expected) < 2:
            *_, terminated, truncated, info = single.step(single.action_space.sample())
            if terminated or truncated:
                expected.append((info["episode"]["r"], info["episode"]["l"]))
                single.reset()
        recorded = [
            (infos["episode"]["r"][i], infos["episode"]["l"][i]) for _, done, infos in results if done[i]
        ]
        assert [r for r, _ in recorded[:2]] == pytest.approx([r for r, _ in expected])
        assert [length for _, length in recorded[:2]] == [length for _, length in expected]


def test_missing_keys_are_named():
    reset_facts = {key: value for key, value in START_FACTS.items() if key != "target_to_basket_xy"}
    envs = StagedRewardVectorWrapper(
        SyncVectorEnv([lambda: FactsReplayEnv(PICK_AND_PLACE, reset_facts=reset_facts)] * 2)
    )
    with pytest.raises(MissingInfoKeysError, match=r"lacks the key\(s\) \['target_to_basket_xy'\]"):
        envs.reset()


def test_a_key_missing_in_one_sub_env_is_named():
    partial = {key: value for key, value in START_FACTS.items() if key != "eef_to_target"}
    envs = StagedRewardVectorWrapper(
        SyncVectorEnv([lambda: FactsReplayEnv([START_FACTS]), lambda: FactsReplayEnv([partial])])
    )
    envs.reset()
    with pytest.raises(MissingInfoKeysError, match=r"step\(\) lacks the key\(s\) \['eef_to_target'\]"):
        envs.step(envs.action_space.sample())


def test_missing_autoreset_metadata_assumes_next_step():
    base = SyncVectorEnv([lambda: FactsReplayEnv(LIFT_AND_DROP)])
    del base.metadata["autoreset_mode"]
    with pytest.warns(UserWarning, match="assumes AutoresetMode.NEXT_STEP"):
        envs = StagedRewardVectorWrapper(base)
    assert envs.autoreset_mode == AutoresetMode.NEXT_STEP


def test_autoreset_mode_given_as_string():
    base = SyncVectorEnv([lambda: FactsReplayEnv(LIFT_AND_DROP)], autoreset_mode=AutoresetMode.SAME_STEP)
    base.metadata["autoreset_mode"] = "SameStep"
    assert StagedRewardVectorWrapper(base).autoreset_mode == AutoresetMode.SAME_STEP
