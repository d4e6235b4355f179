"""Success that means placed, the basket penalty, and facts of the wrong type or range."""

import math

import numpy as np
import pytest

from rewards import (
    InvalidFactError,
    MissingInfoKeysError,
    RewardConfig,
    Stage,
    StagedRewardWrapper,
    dense_reward,
    sparse_reward,
    staged_reward,
)
from rewards.testing import PICK_AND_PLACE, FactsReplayEnv, facts

PLACED = RewardConfig(require_placement=True)

# The object in the basket by LIBERO's predicate, still clamped by the gripper, after a carry.
CARRIED = facts(eef_to_target=0.02, target_grasped=True, target_lift=0.1, target_to_basket_xy=0.4)
IN_BASKET_GRIPPED = facts(
    is_success=True, target_grasped=True, target_lift=0.05, target_in_basket=True, eef_to_target=0.05,
    target_to_basket_xy=0.01,
)


def _episode(steps, config):
    memory, out = None, []
    for step in steps:
        result = staged_reward(step, memory, config)
        memory = result.memory
        out.append(result)
    return out


def test_top_stage_needs_placement_when_asked():
    default, placed = (_episode([CARRIED, IN_BASKET_GRIPPED], c)[-1] for c in (RewardConfig(), PLACED))
    assert int(default.stage) == Stage.SUCCESS and float(default.reward) == 16.0
    # Still held: stage 3 with both basket bonuses, below the top stage.
    assert int(placed.stage) == Stage.LIFTED
    assert float(placed.reward) == 8.0 + 2.0 + 2.0
    released = {**IN_BASKET_GRIPPED, "target_grasped": False, "is_placed": True}
    assert int(_episode([CARRIED, released], PLACED)[-1].stage) == Stage.SUCCESS


def test_a_disturbed_basket_costs_the_documented_penalty_on_every_step():
    knocked = {**IN_BASKET_GRIPPED, "basket_disturbed": True}
    results = _episode([CARRIED, knocked, knocked], PLACED)
    penalty = PLACED.basket_disturbed_reward
    assert penalty == -8.0
    for result in results[1:]:
        assert float(result.terms["basket_disturbed"]) == penalty
        assert float(result.reward) == pytest.approx(8.0 + 2.0 + 2.0 + penalty)
        assert float(result.reward) == pytest.approx(sum(float(v) for v in result.terms.values()))
    # A knocked basket never pays more than reaching the object (stage 2).
    assert float(results[-1].reward) <= PLACED.stage_rewards[Stage.GRASPABLE]
    # Without require_placement the fact is not read and costs nothing.
    assert float(_episode([CARRIED, knocked], RewardConfig())[-1].terms["basket_disturbed"]) == 0.0


def test_sparse_and_dense_read_is_placed_when_asked():
    gripped = {**IN_BASKET_GRIPPED, "basket_disturbed": True}
    assert float(sparse_reward(gripped)[0]) == 1.0
    reward, terms = sparse_reward(gripped, PLACED)
    assert float(terms["success"]) == 0.0 and float(reward) == PLACED.basket_disturbed_reward
    assert float(sparse_reward({**IN_BASKET_GRIPPED, "is_placed": True}, PLACED)[0]) == 1.0
    assert float(dense_reward(IN_BASKET_GRIPPED)[0]) == RewardConfig().dense_success_reward
    assert float(dense_reward(IN_BASKET_GRIPPED, PLACED)[1]["success"]) == 0.0


def test_wrapper_with_placement_needs_the_placement_facts():
    core_only = [{key: value for key, value in step.items() if key not in ("is_placed", "basket_disturbed")}
                 for step in PICK_AND_PLACE]
    env = StagedRewardWrapper(FactsReplayEnv(core_only, reset_facts=core_only[0]), config=PLACED)
    with pytest.raises(MissingInfoKeysError, match=r"\['is_placed', 'basket_disturbed'\]"):
        env.reset(seed=0)
    env = StagedRewardWrapper(FactsReplayEnv(PICK_AND_PLACE), config=PLACED)
    env.reset(seed=0)
    stages = [env.step(env.action_space.sample())[4]["stage"] for _ in PICK_AND_PLACE]
    assert stages == [0, 1, 2, 2, 3, 3, 3, 3, 4]


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("is_success", "False", "is_success='False'.*must be a bool"),
        ("target_grasped", 1, "target_grasped=1.*must be a bool"),
        ("target_in_basket", None, "target_in_basket=None.*must be a bool"),
        ("eef_to_target", math.nan, "eef_to_target=nan.*must be finite"),
        ("eef_to_target", None, "eef_to_target=None.*must be a real number"),
        ("target_to_basket_xy", math.inf, "target_to_basket_xy=inf.*must be finite"),
        ("target_to_basket_xy", -0.1, r"target_to_basket_xy=-0.1.*must be a distance >= 0"),
        ("target_lift", "0.1", "target_lift='0.1'.*must be a real number"),
        ("target_lift", True, "target_lift=True.*must be a real number"),
    ],
)
def test_facts_of_the_wrong_type_or_range_are_rejected_naming_key_and_value(key, value, match):
    with pytest.raises(InvalidFactError, match=match):
        staged_reward({**facts(), key: value})
    assert issubclass(InvalidFactError, ValueError)


def test_a_bad_fact_in_one_sub_env_of_a_batch_is_rejected():
    batch = {key: np.array([value, value]) for key, value in facts().items()}
    batch["eef_to_target"] = np.array([0.1, -1.0])
    with pytest.raises(InvalidFactError, match="eef_to_target"):
        staged_reward(batch)
    batch["eef_to_target"] = np.array([0.1, 0.02])
    assert staged_reward(batch).stage.tolist() == [1, 2]


def test_bad_placement_config_values_are_rejected():
    with pytest.raises(ValueError, match="basket_disturbed_reward must be <= 0"):
        RewardConfig(basket_disturbed_reward=1.0)
    with pytest.raises(ValueError, match="require_placement must be True or False, got 'yes'"):
        RewardConfig(require_placement="yes")
    assert PLACED.info_keys[-2:] == ("is_placed", "basket_disturbed")
    assert PLACED.success_key == "is_placed" and RewardConfig().success_key == "is_success"
