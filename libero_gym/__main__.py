"""Run the scripted expert on a LIBERO-Object task and save a rollout video.

Usage:
    python -m libero_gym [--task 4] [--episodes 1] [--init-state 0] [--video outputs/expert_task4.mp4]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import libero_gym
from libero_gym.experts import ScriptedExpert


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m libero_gym", description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="4", help="task number 1-10 or instruction (default: 4, bbq sauce)")
    ap.add_argument("--episodes", type=int, default=1, help="number of episodes")
    ap.add_argument("--init-state", type=int, default=0, help="first benchmark initial state (0-49)")
    ap.add_argument("--video", type=Path, default=Path("outputs/expert_task4.mp4"),
                    help="where to write the video of the first episode ('' for none)")
    a = ap.parse_args(argv)
    task = libero_gym.get_task(a.task)
    render = str(a.video) not in ("", ".")
    env = gym.make(f"LiberoObject-Task{task.task_id}-v0", obs_mode="state",
                   render_mode="rgb_array" if render else None)
    expert = ScriptedExpert(task)
    print(f"Task{task.task_id}: {task.instruction!r}")
    successes = 0
    for ep in range(a.episodes):
        k = (a.init_state + ep) % libero_gym.NUM_INIT_STATES
        t0 = time.perf_counter()
        obs, info = env.reset(options={"init_state": k})
        expert.reset()
        frames = [env.render()] if render and ep == 0 else None
        steps, done = 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(expert.act(info))
            steps += 1
            done = terminated or truncated
            if frames is not None:
                frames.append(env.render())
        successes += bool(info["is_success"])
        print(f"episode {ep} (benchmark state {k}): success={info['is_success']} steps={steps} "
              f"({steps / (time.perf_counter() - t0):.0f} steps/s)")
        if frames is not None:
            import imageio.v2 as imageio

            a.video.parent.mkdir(parents=True, exist_ok=True)
            imageio.mimsave(a.video, [np.asarray(f) for f in frames], fps=20)
            print(f"video: {a.video}")
    env.close()
    print(f"success {successes}/{a.episodes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
