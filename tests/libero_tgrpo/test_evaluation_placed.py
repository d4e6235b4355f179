"""Both success metrics through the benchmark evaluation, with token sequences that do and do not place."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import tgrpo
from libero_gym.experts import ScriptedExpert
from libero_tgrpo.envs import make_eval_envs
from libero_tgrpo.evaluation import evaluate_benchmark

TOKENIZER = tgrpo.ActionTokenizer()
PUSH_INTO_BASKET_WALL = np.array([1.0, 0.0, -0.5, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)


def expert_tokens(tip: bool) -> np.ndarray:
    """Tokens of the scripted expert on Task4 benchmark state 0, as executed (actions decoded from tokens).

    With ``tip`` the carry ends in a push into the basket's far wall with the bottle held, which LIBERO's
    predicate counts as a success with the basket knocked over.
    """
    env = gym.make("LiberoObject-Task4-v0", terminate_on="is_placed")
    expert = ScriptedExpert(4)
    _, info = env.reset(options={"init_state": 0})
    tokens = []
    for _ in range(280):
        action = expert.act(info)
        if tip and expert.phase in ("lower", "release", "done"):
            action = PUSH_INTO_BASKET_WALL
        tokens.append(TOKENIZER.encode(action[None])[0])
        _, _, terminated, truncated, info = env.step(TOKENIZER.decode(tokens[-1][None])[0])
        if terminated or truncated:
            break
    env.close()
    return np.array(tokens)


class ReplayPolicy(tgrpo.MLPTokenPolicy):
    """Emits a fixed token sequence, one action per call (one sub-env)."""

    def __init__(self, tokens: np.ndarray) -> None:
        super().__init__(29, obs_keys=("state",), hidden=(8,), seed=0)
        self.tokens = torch.as_tensor(tokens)
        self.t = 0

    def sample(self, obs, instructions, temperature=1.0):
        row = self.tokens[min(self.t, len(self.tokens) - 1)][None]
        self.t += 1
        return row.clone(), torch.zeros(row.shape)


@pytest.mark.parametrize(("tip", "placed"), [(False, True), (True, False)])
def test_libero_success_and_placed_side_by_side(tip, placed):
    envs = make_eval_envs(4, 1, vectorization="sync")
    try:
        res = evaluate_benchmark(envs, ReplayPolicy(expert_tokens(tip)), [0], progress=False)
    finally:
        envs.close()
    (episode,) = res["episodes"]
    assert episode["success"] is True, "LIBERO's predicate holds in both runs"
    assert episode["placed"] is placed
    s = res["summary"]
    assert (s["successes"], s["success_rate"]) == (1, 1.0)
    assert (s["placed"], s["placed_rate"]) == (int(placed), float(placed))


def test_evaluation_refuses_an_env_without_the_release_check():
    from libero_tgrpo.envs import make_train_envs

    policy = tgrpo.MLPTokenPolicy(29, obs_keys=("state",), hidden=(8,), seed=0)
    envs = make_train_envs(4, 2, vectorization="sync", shared_placement=False)
    try:
        with pytest.raises(ValueError, match="release_check=.*make_eval_envs"):
            evaluate_benchmark(envs, policy, [0], progress=False)
    finally:
        envs.close()
