"""Benchmark one TGRPO iteration: rollout / policy forward / update time and peak memory.

Runs the built-in ``MLPTokenPolicy`` on a group of M vector sub-envs for L steps (default M=8, L=200, the
paper's step cap) and writes ``benchmarks/results/tgrpo_update.json`` and ``.md`` with the torch version and
the machine recorded. The default env is a tiny synthetic one that never succeeds, so every group runs the
full L steps and the numbers measure the algorithm, not a simulator; ``--env-id`` benchmarks any registered
Gymnasium id instead.

Usage:
    python benchmarks/tgrpo_update.py [--num-envs 8] [--max-steps 200] [--iterations 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import tgrpo

RESULTS = Path(__file__).resolve().parent / "results"


class SyntheticEnv(gym.Env):
    """State-based env with a 32-D observation and 7-D action; reward in {0, 1, 2}, never succeeds."""

    def __init__(self, obs_dim: int = 32) -> None:
        self.observation_space = gym.spaces.Dict(
            {"state": gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)
        self.instruction = "synthetic task"

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs(), {"is_success": False, "instruction": self.instruction}

    def _obs(self):
        return {"state": self.np_random.normal(size=self.observation_space["state"].shape).astype(np.float32)}

    def step(self, action):
        reward = float((action[0] > 0) + (action[1] > 0))
        return self._obs(), reward, False, False, {"is_success": False, "instruction": self.instruction}


def machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gym.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def bench(args: argparse.Namespace, schedule: str) -> dict:
    if args.env_id:
        envs = gym.make_vec(args.env_id, num_envs=args.num_envs, vectorization_mode="sync")
    else:
        envs = gym.vector.SyncVectorEnv([SyntheticEnv] * args.num_envs)
    policy = tgrpo.MLPTokenPolicy.from_space(envs.single_observation_space, seed=0)
    cfg = tgrpo.TGRPOConfig(
        max_steps=args.max_steps,
        iterations=args.iterations + 1,  # the first iteration is warm-up and not counted
        update_schedule=schedule,
        output_dir=tempfile.mkdtemp(prefix="tgrpo_bench_"),
        log_formats=(),
        checkpoint_interval=0,
        progress_bar=False,
        plot=False,
    )
    rss_before = peak_rss_mib()
    t0 = time.perf_counter()
    rows = tgrpo.train(envs, policy, cfg).history[1:]
    wall = time.perf_counter() - t0
    keys = (
        "time/rollout_s",
        "time/sample_s",
        "time/env_s",
        "time/forward_s",
        "time/update_s",
        "time/iteration_s",
    )
    mean = {k.split("/")[1]: float(np.mean([r[k] for r in rows])) for k in keys}
    return {
        "update_schedule": schedule,
        "num_envs": args.num_envs,
        "group_length": float(np.mean([r["charts/group_length"] for r in rows])),
        "optimizer_steps_per_iteration": float(np.mean([r["losses/optimizer_steps"] for r in rows])),
        "iterations_timed": len(rows),
        "seconds_per_iteration": mean,
        "env_steps_per_second": args.num_envs * args.max_steps / mean["iteration_s"],
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_before_mib": rss_before,
        "total_wall_s": wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-envs", type=int, default=8, help="group size M")
    ap.add_argument("--max-steps", type=int, default=200, help="steps per trajectory L")
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations (after one warm-up)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for tiny nets)"
    )
    ap.add_argument("--env-id", default=None, help="a registered Gymnasium id instead of the synthetic env")
    ap.add_argument("--out", default=str(RESULTS / "tgrpo_update"), help="output path without extension")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        "benchmark": "tgrpo_update",
        "policy": "MLPTokenPolicy (hidden 64x64, 7 x 256-way heads)",
        "env": args.env_id or "SyntheticEnv (32-D state, never succeeds: every group runs L steps)",
        "machine": machine(),
        "runs": [bench(args, s) for s in ("per_step", "minibatch")],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# TGRPO update benchmark",
        "",
        f"Policy: {results['policy']}; env: {results['env']}.",
        f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, torch "
        f"{results['machine']['torch']} ({results['machine']['torch_threads']} thread(s)), "
        f"Python {results['machine']['python']}.",
        "",
        "Seconds per iteration (mean of the timed iterations); rollout = policy sampling + env steps;",
        "forward = log-prob recomputation and loss (incl. reference log-probs); update = backward + AdamW step.",
        "",
        "| schedule | M | L | rollout s | (sample s) | (env s) | forward s | update s | iteration s | "
        "opt. steps | env steps/s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        s = r["seconds_per_iteration"]
        lines.append(
            f"| {r['update_schedule']} | {r['num_envs']} | {r['group_length']:.0f} | {s['rollout_s']:.3f} | "
            f"{s['sample_s']:.3f} | {s['env_s']:.3f} | {s['forward_s']:.3f} | {s['update_s']:.3f} | "
            f"{s['iteration_s']:.3f} | {r['optimizer_steps_per_iteration']:.0f} | "
            f"{r['env_steps_per_second']:.0f} | {r['peak_rss_mib']:.0f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
