"""Train Stable-Baselines3 PPO on LIBERO-Object with the paper's staged reward.

The reward is not part of the environment: ``rewards.StagedRewardWrapper`` computes it from the facts the
env reports in ``info``, so the same few lines work with any RL library that takes a Gymnasium env.
The policy sees the env's state vector (``obs_mode="state"``, flattened from its Dict observation).

Usage (headless, CPU):
    python examples/sb3_ppo_staged_reward.py --total-timesteps 100000 --n-envs 2 --seed 0
    python examples/sb3_ppo_staged_reward.py --reward-mode dense   # compare with a dense reward

Needs ``pip install stable-baselines3`` beside this project's ``libero`` extra.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import gymnasium as gym
import numpy as np

import libero_gym  # noqa: F401  (registers the LiberoObject-* ids)
from rewards import REWARD_MODES, StagedRewardWrapper


@dataclass
class Args:
    """Command-line arguments: each field is a ``--flag``, its ``help`` the flag's help."""

    env_id: str = field(default="LiberoObject-Task1-v0", metadata={"help": "registered LIBERO-Object id"})
    total_timesteps: int = field(default=100_000, metadata={"help": "env steps to train for (all envs)"})
    n_envs: int = field(default=2, metadata={"help": "parallel envs; more than 1 run in their own processes"})
    seed: int = field(default=0, metadata={"help": "seed of PPO and of the envs (env i gets seed + i)"})
    reward_mode: str = field(
        default="staged", metadata={"help": "reward PPO is trained on", "choices": REWARD_MODES}
    )
    max_episode_steps: int = field(
        default=200, metadata={"help": "step limit of an episode (the paper's 200)"}
    )
    n_steps: int = field(default=256, metadata={"help": "PPO rollout length per env between updates"})
    batch_size: int = field(default=64, metadata={"help": "PPO minibatch size"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam learning rate"})
    save_path: str = field(
        default="", metadata={"help": "where to save the trained model (not saved if empty)"}
    )
    summary_path: str = field(default="", metadata={"help": "where to write the run's summary as JSON"})


def make_env(env_id: str, reward_mode: str, max_episode_steps: int) -> Callable[[], gym.Env]:
    """A constructor of one training env: LIBERO-Object (state mode) -> staged reward -> flat observation."""

    def thunk() -> gym.Env:
        env = gym.make(env_id, obs_mode="state", max_episode_steps=max_episode_steps)
        env = StagedRewardWrapper(env, mode=reward_mode)
        return gym.wrappers.FlattenObservation(env)

    return thunk


def stage_logger():
    """An SB3 callback logging, per finished episode, the highest stage reached and the success rate.

    It also keeps the range of the rewards PPO received at each stage.
    """
    from stable_baselines3.common.callbacks import BaseCallback

    class StageLogger(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.max_stage: np.ndarray | None = None
            self.episodes: list[dict[str, float]] = []
            self.reward_range: dict[int, list[float]] = {}  # stage -> [lowest, highest] reward seen

        def _on_step(self) -> bool:
            infos, dones, rewards = self.locals["infos"], self.locals["dones"], self.locals["rewards"]
            if self.max_stage is None:
                self.max_stage = np.zeros(len(infos), dtype=int)
            for i, info in enumerate(infos):
                stage, reward = int(info["stage"]), float(rewards[i])
                low, high = self.reward_range.get(stage, [reward, reward])
                self.reward_range[stage] = [min(low, reward), max(high, reward)]
                self.max_stage[i] = max(self.max_stage[i], stage)
                if dones[i]:
                    self.episodes.append(
                        {"max_stage": int(self.max_stage[i]), "success": float(info["is_success"])}
                    )
                    self.logger.record_mean("rollout/max_stage", self.max_stage[i])
                    self.logger.record_mean("rollout/success_rate", float(info["is_success"]))
                    self.max_stage[i] = 0
            return True

    return StageLogger()


def main(argv: Sequence[str] | None = None) -> dict:
    """Train PPO and return a summary (timesteps, episodes, highest stages, success rate)."""
    args = parse_args(argv)
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    vec_cls, vec_kwargs = (
        (SubprocVecEnv, {"start_method": "forkserver"}) if args.n_envs > 1 else (DummyVecEnv, None)
    )
    envs = make_vec_env(
        make_env(args.env_id, args.reward_mode, args.max_episode_steps),
        n_envs=args.n_envs,
        seed=args.seed,
        vec_env_cls=vec_cls,
        vec_env_kwargs=vec_kwargs,
    )
    model = PPO(
        "MlpPolicy",
        envs,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device="cpu",
        verbose=1,
    )
    callback = stage_logger()
    try:
        model.learn(total_timesteps=args.total_timesteps, callback=callback)
    finally:
        envs.close()
    if args.save_path:
        model.save(args.save_path)
    episodes = callback.episodes
    summary = {
        "args": asdict(args),
        "timesteps": int(model.num_timesteps),
        "episodes": len(episodes),
        "max_stage_counts": np.bincount([e["max_stage"] for e in episodes], minlength=5).tolist(),
        "success_rate": float(np.mean([e["success"] for e in episodes])) if episodes else None,
        "reward_range_by_stage": {str(stage): r for stage, r in sorted(callback.reward_range.items())},
    }
    print(
        f"{summary['timesteps']} steps, {summary['episodes']} episodes, episodes by highest stage "
        f"{summary['max_stage_counts']}, success rate {summary['success_rate']}"
    )
    if args.summary_path:
        with open(args.summary_path, "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def parse_args(argv: Sequence[str] | None = None) -> Args:
    """Parse the command line into :class:`Args`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in fields(Args):
        parser.add_argument(
            "--" + f.name.replace("_", "-"), type=type(f.default), default=f.default, **f.metadata
        )
    return Args(**vars(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
