"""RewardConfig: the paper's defaults, and broken configs rejected with a message saying what to fix."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import rewards.config
from rewards import RewardConfig, Stage


def test_defaults_are_the_papers_values():
    config = RewardConfig()
    assert config.stage_rewards == (-2.0, 2.0, 4.0, 8.0, 16.0)
    assert config.drop_reward == -4.0
    assert [int(s) for s in Stage] == [0, 1, 2, 3, 4]
    # The basket bonuses never lift stage 3 to stage 4's value.
    best_stage3 = config.stage_rewards[3] + config.basket_approach_bonus + config.basket_above_bonus
    assert best_stage3 < config.stage_rewards[4]


def test_every_field_is_documented_in_the_source():
    source = inspect.getsource(rewards.config)
    for field in dataclasses.fields(RewardConfig):
        declaration = source.index(f"    {field.name}: ")
        assert source[declaration:].split("\n", 2)[1].strip().startswith('"""'), field.name


def test_stage_rewards_are_stored_as_floats():
    assert RewardConfig(stage_rewards=(-1, 0, 1, 2, 10)).stage_rewards == (-1.0, 0.0, 1.0, 2.0, 10.0)


@pytest.mark.parametrize(
    "name", ["approach_distance", "grasp_distance", "lift_height", "basket_above_radius"]
)
@pytest.mark.parametrize("value", [-0.05, 0.0])
def test_non_positive_thresholds_are_rejected(name, value):
    with pytest.raises(
        ValueError, match=rf"RewardConfig\.{name} must be a finite number > 0 \(metres\), got"
    ):
        RewardConfig(**{name: value})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", True])
def test_non_numbers_are_rejected(value):
    with pytest.raises(ValueError, match=r"RewardConfig\.lift_height must be a finite number"):
        RewardConfig(lift_height=value)


def test_grasp_distance_must_lie_inside_approach_distance():
    with pytest.raises(
        ValueError, match=r"grasp_distance \(0\.3\) must be smaller than approach_distance \(0\.2\)"
    ):
        RewardConfig(grasp_distance=0.3, approach_distance=0.2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((-2, 2, 2, 8, 16), r"stage 2's value \(2\.0\) is not above stage 1's \(2\.0\)"),
        ((-2, 2, 4, 16, 8), r"stage 4's value \(8\.0\) is not above stage 3's \(16\.0\)"),
        ((3, 2, 4, 8, 16), r"Raise stage 1's value or lower stage 0's"),
    ],
)
def test_non_increasing_stage_rewards_are_rejected(values, message):
    with pytest.raises(ValueError, match=r"stage_rewards must be strictly increasing.*" + message):
        RewardConfig(stage_rewards=values)


def test_stage_rewards_need_five_values():
    with pytest.raises(ValueError, match=r"one value per stage 0-4 \(5 values\), got 4"):
        RewardConfig(stage_rewards=(-2, 2, 4, 8))


def test_non_finite_stage_reward_is_rejected():
    with pytest.raises(ValueError, match=r"stage_rewards\[4\] must be a finite number"):
        RewardConfig(stage_rewards=(-2, 2, 4, 8, float("inf")))


def test_bonuses_that_reach_stage_4_are_rejected():
    with pytest.raises(ValueError, match=r"8\.0 \+ 5\.0 \+ 3\.0 = 16\.0\) must stay below stage 4's value"):
        RewardConfig(basket_approach_bonus=5.0, basket_above_bonus=3.0)


def test_negative_bonus_is_rejected():
    with pytest.raises(ValueError, match=r"basket_above_bonus must be >= 0, got -1\.0"):
        RewardConfig(basket_above_bonus=-1.0)


def test_drop_reward_must_be_below_stage_3():
    with pytest.raises(ValueError, match=r"drop_reward \(8\.0\) must be below stage 3's value \(8\.0\)"):
        RewardConfig(drop_reward=8.0)


def test_sparse_and_dense_values_are_checked():
    with pytest.raises(ValueError, match=r"success_reward must be > 0, got 0\.0"):
        RewardConfig(success_reward=0.0)
    with pytest.raises(ValueError, match=r"dense_success_reward must be greater than 4\.0"):
        RewardConfig(dense_success_reward=4.0)
    with pytest.raises(ValueError, match=r"dense_reach_scale must be a finite number > 0 \(1/m\)"):
        RewardConfig(dense_reach_scale=-1.0)


def test_a_consistent_custom_config_is_accepted():
    config = RewardConfig(
        approach_distance=0.3,
        grasp_distance=0.1,
        lift_height=0.02,
        stage_rewards=(0, 1, 2, 3, 10),
        drop_reward=-1,
    )
    assert config.grasp_distance == 0.1
