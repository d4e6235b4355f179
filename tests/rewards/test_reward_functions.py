"""The pure reward functions, on facts worked by hand."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rewards import (
    REQUIRED_INFO_KEYS,
    MissingInfoKeysError,
    RewardConfig,
    StagedMemory,
    compute_reward,
    dense_reward,
    sparse_reward,
    staged_reward,
)
from rewards.testing import LIFT_AND_DROP, PICK_AND_PLACE, facts

HELD = dict(eef_to_target=0.02, target_grasped=True, target_lift=0.1)


def run_episode(episode, config=None):
    """Rewards, stages and terms of the staged reward along a list of facts, memory carried along."""
    config = config if config is not None else RewardConfig()
    memory, rewards, stages, terms = None, [], [], []
    for step_facts in episode:
        reward, stage, memory, step_terms = staged_reward(step_facts, memory, config)
        rewards.append(float(reward))
        stages.append(int(stage))
        terms.append({name: float(value) for name, value in step_terms.items()})
    return rewards, stages, terms


@pytest.mark.parametrize(
    ("step_facts", "stage", "reward"),
    [
        (facts(eef_to_target=0.2), 0, -2.0),  # the threshold itself is still "far"
        (facts(eef_to_target=0.19), 1, 2.0),
        (facts(eef_to_target=0.07), 1, 2.0),
        (facts(eef_to_target=0.069), 2, 4.0),
        (facts(eef_to_target=0.02, target_grasped=True, target_lift=0.039), 2, 4.0),  # not yet lifted
        (facts(eef_to_target=0.02, target_grasped=True, target_lift=0.04), 3, 8.0),
        (facts(eef_to_target=0.3, target_lift=0.2), 0, -2.0),  # in the air but never grasped: not stage 3
        (facts(is_success=True), 4, 16.0),  # success is stage 4 whatever else holds
    ],
)
def test_first_step_stages(step_facts, stage, reward):
    result = staged_reward(step_facts)
    assert int(result.stage) == stage
    assert float(result.reward) == reward


def test_pick_and_place_episode_by_hand():
    rewards, stages, terms = run_episode(PICK_AND_PLACE)
    assert stages == [0, 1, 2, 2, 3, 3, 3, 3, 4]
    # Lifted 0.4 m from the basket; at 0.23 m the progress is (0.4 - 0.23) / (0.4 - 0.06) = 0.5 of the
    # 2.0 approach bonus; above the basket (<= 0.06 m) both bonuses are paid, also once released into it.
    assert rewards == pytest.approx([-2, 2, 4, 4, 8, 9, 12, 12, 16])
    assert terms[5]["basket_approach"] == pytest.approx(1.0)
    assert terms[5]["basket_above"] == 0.0
    assert terms[6]["basket_above"] == 2.0
    assert all(t["drop"] == 0.0 for t in terms)


def test_lift_and_drop_episode_by_hand():
    rewards, stages, terms = run_episode(LIFT_AND_DROP)
    assert stages == [0, 2, 3, 1, 0]
    assert rewards == [-2.0, 4.0, 8.0, -4.0, -4.0]
    assert [t["drop"] for t in terms] == [0.0, 0.0, 0.0, -4.0, -4.0]
    assert [t["stage_value"] for t in terms] == [-2.0, 4.0, 8.0, 0.0, 0.0]


def test_releasing_the_target_without_lifting_it_is_no_drop():
    rewards, stages, _ = run_episode(
        [facts(eef_to_target=0.02, target_grasped=True), facts(eef_to_target=0.1)]
    )
    assert stages == [2, 1]
    assert rewards == [4.0, 2.0]


@pytest.mark.parametrize(
    ("after_lift", "stage"),
    [
        (facts(eef_to_target=0.02, target_lift=0.08), 3),  # released, still above the lift height (falling)
        (facts(eef_to_target=0.02, target_in_basket=True), 3),  # released into the basket
        (facts(eef_to_target=0.02, target_grasped=True), 3),  # held, lowered below the lift height
        (facts(eef_to_target=0.02, target_in_basket=True, is_success=True), 4),
    ],
)
def test_after_a_lift_only_a_real_drop_is_penalised(after_lift, stage):
    rewards, stages, terms = run_episode([facts(**HELD), after_lift])
    assert stages[1] == stage
    assert terms[1]["drop"] == 0.0
    assert rewards[1] >= 8.0


def test_a_regrasp_after_a_drop_ends_the_penalty():
    rewards, stages, _ = run_episode([facts(**HELD), facts(eef_to_target=0.02), facts(**HELD)])
    assert rewards[1] == -4.0
    assert stages[2] == 3
    assert rewards[2] == 8.0


def test_stage_4_exactly_when_success():
    for episode in (PICK_AND_PLACE, LIFT_AND_DROP):
        _, stages, _ = run_episode(episode)
        assert [s == 4 for s in stages] == [f["is_success"] for f in episode]


def test_approach_bonus_starts_from_the_lift_position():
    # Lifted 0.2 m from the basket: the bonus scale runs from 0.2 m to 0.06 m.
    rewards, _, terms = run_episode(
        [facts(**HELD, target_to_basket_xy=0.2), facts(**HELD, target_to_basket_xy=0.13), facts(**HELD)]
    )
    assert terms[1]["basket_approach"] == pytest.approx(1.0)
    assert terms[2]["basket_approach"] == 0.0  # moving away never makes the bonus negative
    assert rewards[2] == 8.0


def test_lifted_already_above_the_basket_gets_the_full_bonus():
    rewards, _, _ = run_episode([facts(**HELD, target_to_basket_xy=0.02)])
    assert rewards == [12.0]


def test_stage_3_never_pays_as_much_as_stage_4():
    xy = np.linspace(0.0, 1.0, 101)
    result = staged_reward({**facts(**HELD), "target_to_basket_xy": xy})
    assert np.all(result.stage == 3)
    assert result.reward.max() == 12.0
    assert result.reward.max() < RewardConfig().stage_rewards[4]


def test_config_values_are_used():
    config = RewardConfig(
        stage_rewards=(0, 1, 2, 3, 10), drop_reward=-1, grasp_distance=0.01, lift_height=0.2
    )
    rewards, stages, _ = run_episode(
        [facts(eef_to_target=0.02, target_grasped=True, target_lift=0.1)], config
    )
    assert (stages, rewards) == ([1], [1.0])
    rewards, _, _ = run_episode([facts(**{**HELD, "target_lift": 0.3}), facts(eef_to_target=0.1)], config)
    assert rewards[1] == -1.0


@pytest.mark.parametrize("reward_fn", [staged_reward, sparse_reward, dense_reward])
def test_batch_equals_one_env_at_a_time(reward_fn):
    rng = np.random.default_rng(0)
    n, steps = 16, 12
    episodes = [
        [
            facts(
                is_success=bool(rng.random() < 0.1),
                target_grasped=bool(rng.random() < 0.5),
                target_lift=float(rng.uniform(0, 0.1)),
                target_in_basket=bool(rng.random() < 0.2),
                eef_to_target=float(rng.uniform(0, 0.3)),
                target_to_basket_xy=float(rng.uniform(0, 0.5)),
            )
            for _ in range(steps)
        ]
        for _ in range(n)
    ]
    batch_memory = StagedMemory.initial((n,))
    memories = [None] * n
    for t in range(steps):
        batch = {key: np.array([episodes[i][t][key] for i in range(n)]) for key in REQUIRED_INFO_KEYS}
        if reward_fn is staged_reward:
            batch_result = staged_reward(batch, batch_memory)
            batch_memory = batch_result.memory
            batch_reward, batch_terms = batch_result.reward, batch_result.terms
        else:
            batch_reward, batch_terms = reward_fn(batch)
        assert batch_reward.shape == (n,)
        for i in range(n):
            if reward_fn is staged_reward:
                single = staged_reward(episodes[i][t], memories[i])
                memories[i] = single.memory
                reward, terms = single.reward, single.terms
                assert batch_result.stage[i] == single.stage
            else:
                reward, terms = reward_fn(episodes[i][t])
            assert reward.shape == ()
            assert batch_reward[i] == reward
            for name in terms:
                assert batch_terms[name][i] == terms[name]


@pytest.mark.parametrize("mode", ["staged", "sparse", "dense"])
def test_terms_sum_to_the_reward(mode):
    memory = None
    for step_facts in PICK_AND_PLACE + LIFT_AND_DROP:
        result = compute_reward(step_facts, memory, mode=mode)
        memory = result.memory
        assert sum(result.terms.values()) == pytest.approx(result.reward)


def test_functions_are_pure():
    step_facts = {key: np.array([value, value]) for key, value in facts(**HELD).items()}
    before = copy.deepcopy(step_facts)
    memory = StagedMemory.initial((2,))
    first = staged_reward(step_facts, memory)
    again = staged_reward(step_facts, memory)
    assert not memory.was_lifted.any()  # the input memory is untouched
    assert np.array_equal(first.reward, again.reward)
    assert first.memory.was_lifted.all()
    for key in before:
        assert np.array_equal(before[key], step_facts[key])


def test_memory_reset_mask():
    memory = staged_reward({**facts(**HELD), "target_to_basket_xy": np.array([0.3, 0.4])}).memory
    reset = memory.reset(np.array([True, False]))
    assert reset.was_lifted.tolist() == [False, True]
    assert np.isnan(reset.lift_basket_xy[0])
    assert reset.lift_basket_xy[1] == 0.4


def test_sparse_reward_values():
    reward, terms = sparse_reward({"is_success": np.array([False, True])}, RewardConfig(success_reward=10.0))
    assert reward.tolist() == [0.0, 10.0]
    assert terms["success"].tolist() == [0.0, 10.0]


def test_dense_reward_by_hand():
    config = RewardConfig()
    reward, terms = dense_reward(facts(eef_to_target=0.0, target_to_basket_xy=0.4))
    assert float(reward) == 1.0  # reach only
    reward, terms = dense_reward(facts(eef_to_target=0.0, target_grasped=True, target_lift=0.02))
    assert float(reward) == pytest.approx(1.0 + 1.0 + 0.5)  # reach + grasp + half the lift
    reward, terms = dense_reward(
        facts(eef_to_target=0.0, target_grasped=True, target_lift=0.1, target_to_basket_xy=0.0)
    )
    assert float(reward) == pytest.approx(4.0)
    assert float(terms["place"]) == 1.0
    reward, terms = dense_reward(facts(eef_to_target=0.1, target_to_basket_xy=0.4))
    assert float(reward) == pytest.approx(1.0 - np.tanh(config.dense_reach_scale * 0.1))
    reward, terms = dense_reward(facts(is_success=True))
    assert float(reward) == config.dense_success_reward
    assert float(terms["reach"]) == 0.0


def test_dense_reward_grows_as_the_gripper_approaches():
    reward, _ = dense_reward({**facts(), "eef_to_target": np.linspace(0.5, 0.0, 11)})
    assert np.all(np.diff(reward) > 0)


def test_missing_facts_are_named():
    incomplete = {key: value for key, value in facts().items() if key not in ("target_lift", "eef_to_target")}
    with pytest.raises(MissingInfoKeysError) as error:
        staged_reward(incomplete)
    assert error.value.missing == ("target_lift", "eef_to_target")
    assert "['target_lift', 'eef_to_target']" in str(error.value)
    assert "docs/info_contract.md" in str(error.value)
    assert isinstance(error.value, KeyError)


def test_unknown_mode_is_rejected():
    with pytest.raises(
        ValueError, match=r"Unknown reward mode 'shaped': choose one of \['staged', 'sparse', 'dense'\]"
    ):
        compute_reward(facts(), mode="shaped")
