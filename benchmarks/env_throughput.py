"""Env steps per second of libero_gym against raw LIBERO (OffScreenRenderEnv) under the same settings.

Measures, in one run on this machine:
  * one env on one core (process pinned to core 0): raw LIBERO and libero_gym, state-only and with the
    two standard cameras (agentview + wrist) at --size px;
  * libero_gym as an async vector env with 2 workers on both cores against one env (same mode);
  * libero_gym as a RayVectorEnv on a local Ray (``ray.init(num_cpus=2)``) with 1 and 2 actors, and the
    per-step overhead of a Ray actor against an async worker (state mode, one env each);
  * the mean absolute pixel difference between libero_gym's images (MSAA off) and images rendered with
    MuJoCo's default anti-aliasing, for the same simulator state.

Usage:
    python -m benchmarks.env_throughput [--task 1] [--size 128] [--steps 400] [--rgb-steps 40] [--no-ray]

Writes benchmarks/results/env_throughput.{json,md}, with the load average of the machine before and after
(other processes on a shared machine slow every number down) and an estimate of the paper table's wall time
on a 64-core Ray cluster computed from the cell timings in benchmarks/results/paper_table.json.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import io
import json
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

import libero_gym  # noqa: E402
from benchmarks._common import RESULTS, write_json  # noqa: E402

ACTIONS_SEED = 0

TARGETS = {"state_vs_raw": 2.0, "rgb_vs_raw": 1.5, "async2_vs_1_state": 1.7, "async2_vs_1_rgb": 1.7}
"""Speed targets (ratios) this benchmark checks."""

RAY_ACTOR_CPUS = 0.5
"""CPUs each Ray actor asks for here, so that the 1-actor and the 2-actor env (3 actors) exist side by side
on a 2-CPU local Ray and can be stepped in alternating blocks; only one of them steps at a time."""

CLUSTER_CORES = 64
"""Cores of the cluster in the paper-table estimate."""

CORES_PER_CELL = 2
"""Cores one paper-table cell uses (its two env workers; the policy is small and single-threaded)."""


def _actions(n: int) -> np.ndarray:
    rng = np.random.default_rng(ACTIONS_SEED)
    return rng.uniform(-0.3, 0.3, (n, 7)).astype(np.float32)


def _raw_env(task: int, size: int, render: bool):
    with contextlib.redirect_stdout(io.StringIO()):
        from libero.libero import benchmark, get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        suite = benchmark.get_benchmark_dict()["libero_object"]()
        t = suite.get_task(task - 1)
        bddl = os.path.join(get_libero_path("bddl_files"), t.problem_folder, t.bddl_file)
        kw = dict(bddl_file_name=bddl, camera_heights=size, camera_widths=size)
        if not render:
            kw.update(has_offscreen_renderer=False, use_camera_obs=False)
        env = OffScreenRenderEnv(**kw)
        env.seed(0)
        env.reset()
        env.set_init_state(suite.get_task_init_states(task - 1)[0])
    return env


def interleaved_rates(steppers: dict[str, tuple[Callable[[np.ndarray], Any], int]], n: int,
                      block: int) -> dict[str, float]:
    """Env steps/s of each stepper, timed in alternating blocks of ``block`` calls until each made ``n``.

    ``steppers`` maps a name to ``(step, envs_per_call)``. Alternating the blocks exposes every stepper to
    the same background load, so their ratios stay meaningful on a shared machine. Five untimed calls each
    come first.
    """
    acts = _actions(n + 5)
    for step, _ in steppers.values():
        for a in acts[:5]:
            step(a)
    spent = dict.fromkeys(steppers, 0.0)
    for start in range(5, n + 5, block):
        for name, (step, _) in steppers.items():
            t0 = time.perf_counter()
            for a in acts[start:min(start + block, n + 5)]:
                step(a)
            spent[name] += time.perf_counter() - t0
    return {name: per_call * n / spent[name] for name, (_, per_call) in steppers.items()}


def single_env_rates(task: int, size: int, render: bool, n: int, block: int) -> tuple[float, float]:
    """(raw LIBERO, libero_gym) steps/s of one env each, interleaved in the same process."""
    raw = _raw_env(task, size, render)
    ours = libero_gym.LiberoObjectEnv(task=task, obs_mode="rgb" if render else "state", image_size=size)
    ours.reset(options={"init_state": 0})
    try:
        rates = interleaved_rates({"raw": (raw.step, 1), "ours": (ours.step, 1)}, n, block)
    finally:
        raw.close()
        ours.close()
    return rates["raw"], rates["ours"]


def vector_rates(task: int, size: int, obs_mode: str, setups: dict[str, tuple[str, int]], n: int,
                 block: int) -> dict[str, float]:
    """Total env steps/s of several vector envs (name -> (vectorization, num_envs)), interleaved."""
    built = {}
    try:
        for name, (vectorization, num_envs) in setups.items():
            extra = {"ray_actor_options": {"num_cpus": RAY_ACTOR_CPUS}} if vectorization == "ray" else {}
            envs = gym.make_vec(f"LiberoObject-Task{task}-v0", num_envs=num_envs, obs_mode=obs_mode,
                                image_size=size, max_episode_steps=10**6, vectorization=vectorization, **extra)
            built[name] = envs
            envs.reset(seed=0, options={"init_state": 0})
        steppers = {name: (_vector_step(envs), envs.num_envs) for name, envs in built.items()}
        return interleaved_rates(steppers, n, block)
    finally:
        for envs in built.values():
            envs.close()


def _vector_step(envs: gym.vector.VectorEnv) -> Callable[[np.ndarray], Any]:
    return lambda a: envs.step(np.repeat(a[None], envs.num_envs, 0))


def msaa_pixel_difference(task: int, size: int) -> dict[str, float]:
    """Mean |difference| (0-255 scale) between libero_gym's images (MSAA off) and raw LIBERO's, same state."""
    raw = _raw_env(task, size, render=True)
    raw_obs = raw.env._get_observations(force_update=True)
    ours = libero_gym.LiberoObjectEnv(task=task, obs_mode="rgb", image_size=size, warmup_steps=0)
    obs, _ = ours.reset(options={"init_state": 0})
    out = {}
    for key, raw_key in (("agentview", "agentview_image"), ("wrist", "robot0_eye_in_hand_image")):
        out[key] = float(np.abs(raw_obs[raw_key][::-1].astype(np.int16) - obs[key].astype(np.int16)).mean())
    out["libero_offsamples"] = int(raw.env.sim.model._model.vis.quality.offsamples)
    raw.close()
    ours.close()
    return out


def lpt_makespan(durations: list[float], slots: int) -> float:
    """Wall time of running independent jobs on ``slots`` equal workers, longest job first (LPT rule)."""
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


def paper_table_estimate() -> dict[str, float] | None:
    """The paper table's cells (benchmarks/results/paper_table.json) scheduled on a 64-core cluster."""
    path = RESULTS / "paper_table.json"
    if not path.is_file():
        return None
    cells = json.loads(path.read_text())["cells"]
    durations = [c["timings_s"]["total"] for c in cells]
    slots = CLUSTER_CORES // CORES_PER_CELL
    return {
        "cells": len(durations),
        "recorded_total_s": sum(durations),
        "longest_cell_s": max(durations),
        "slots": slots,
        "cluster_wall_s": lpt_makespan(durations, slots),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, default=1)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=400, help="timed steps in state mode")
    ap.add_argument("--rgb-steps", type=int, default=40, help="timed steps with cameras")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray measurements")
    a = ap.parse_args()
    load_before = os.getloadavg()

    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[0]})
    single = {}
    single["raw_state"], single["ours_state"] = single_env_rates(a.task, a.size, False, a.steps, 50)
    single["raw_rgb"], single["ours_rgb"] = single_env_rates(a.task, a.size, True, a.rgb_steps, 10)
    print({k: round(v, 1) for k, v in single.items()}, flush=True)
    pixel = msaa_pixel_difference(a.task, a.size)
    os.sched_setaffinity(0, set(cores))
    vec = {}
    for mode, n, block in (("state", a.steps, 50), ("rgb", a.rgb_steps, 10)):
        rates = vector_rates(a.task, a.size, mode, {"1env": ("async", 1), "2env": ("async", 2)}, n, block)
        vec.update({f"{mode}_{k}": v for k, v in rates.items()})
        print(mode, {k: round(v, 1) for k, v in vec.items()}, flush=True)
    ray_rates = {}
    if not a.no_ray:
        import ray

        ray.init(num_cpus=len(cores), include_dashboard=False, logging_level="warning")
        try:
            rates = vector_rates(a.task, a.size, "state",
                                 {"async_1env": ("async", 1), "state_1actor": ("ray", 1), "state_2actor": ("ray", 2)},
                                 a.steps, 50)
        finally:
            ray.shutdown()
        ray_rates = {k: v for k, v in rates.items() if k != "async_1env"}
        ray_rates["async_1env_same_run"] = rates["async_1env"]
        ray_rates["overhead_ms_per_step"] = 1e3 * (1 / rates["state_1actor"] - 1 / rates["async_1env"])
        ray_rates["scaling_2_vs_1"] = rates["state_2actor"] / rates["state_1actor"]
        print("ray", {k: round(v, 2) for k, v in ray_rates.items()}, flush=True)
    load_after = os.getloadavg()
    estimate = paper_table_estimate()
    ratios = {
        "state_vs_raw": single["ours_state"] / single["raw_state"],
        "rgb_vs_raw": single["ours_rgb"] / single["raw_rgb"],
        "async2_vs_1_state": vec["state_2env"] / vec["state_1env"],
        "async2_vs_1_rgb": vec["rgb_2env"] / vec["rgb_1env"],
    }
    cmd = (f"python -m benchmarks.env_throughput --task {a.task} --size {a.size} --steps {a.steps} "
           f"--rgb-steps {a.rgb_steps}" + (" --no-ray" if a.no_ray else ""))
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    write_json("env_throughput", {"command": cmd, "single_core_steps_per_s": single, "vector_steps_per_s": vec,
                                  "ray": ray_rates, "ratios": ratios, "targets": TARGETS,
                                  "msaa_mean_abs_pixel_diff": pixel, "load_average_1_5_15min": load,
                                  "cores": len(cores), "paper_table_on_64_cores": estimate})
    met = {k: ratios[k] >= TARGETS[k] for k in TARGETS}
    lines = [
        "# Env throughput: libero_gym vs raw LIBERO",
        "",
        f"Command: `{cmd}` (Task{a.task}, benchmark state 0, random actions in [-0.3, 0.3], {a.size} px cameras).",
        "",
        f"Machine: {len(cores)} cores shared with other work; load average (1/5/15 min) {load['before']} before and "
        f"{load['after']} after the run. Numbers from a loaded machine are lower bounds for libero_gym and raw "
        "LIBERO alike. Every table compares envs stepped in alternating blocks (50 steps, 10 with cameras) in one "
        "run, so that background load hits them alike and the ratios stay meaningful.",
        "",
        "| setting | raw LIBERO (steps/s) | libero_gym (steps/s) | ratio | target |",
        "|---|---|---|---|---|",
        f"| one core, state only | {single['raw_state']:.1f} | {single['ours_state']:.1f} | "
        f"{ratios['state_vs_raw']:.2f}x | >= {TARGETS['state_vs_raw']}x ({'met' if met['state_vs_raw'] else 'not met'}) |",
        f"| one core, two cameras | {single['raw_rgb']:.1f} | {single['ours_rgb']:.1f} | "
        f"{ratios['rgb_vs_raw']:.2f}x | >= {TARGETS['rgb_vs_raw']}x ({'met' if met['rgb_vs_raw'] else 'not met'}) |",
        "",
        "| libero_gym async vector env, both cores | 1 env (steps/s) | 2 envs (total steps/s) | ratio | target |",
        "|---|---|---|---|---|",
        f"| state | {vec['state_1env']:.1f} | {vec['state_2env']:.1f} | {ratios['async2_vs_1_state']:.2f}x | "
        f">= {TARGETS['async2_vs_1_state']}x ({'met' if met['async2_vs_1_state'] else 'not met'}) |",
        f"| two cameras | {vec['rgb_1env']:.1f} | {vec['rgb_2env']:.1f} | {ratios['async2_vs_1_rgb']:.2f}x | "
        f">= {TARGETS['async2_vs_1_rgb']}x ({'met' if met['async2_vs_1_rgb'] else 'not met'}) |",
        "",
        f"MSAA off vs LIBERO's default ({pixel['libero_offsamples']} samples), same state: mean absolute pixel difference "
        f"agentview {pixel['agentview']:.2f}, wrist {pixel['wrist']:.2f} (0-255 scale).",
    ]
    if ray_rates:
        lines += [
            "",
            f"## Ray: RayVectorEnv on a local Ray (`ray.init(num_cpus={len(cores)})`, actors of "
            f"{RAY_ACTOR_CPUS} CPU), state mode",
            "",
            "| | 1 actor (steps/s) | 2 actors (total steps/s) | 2 vs 1 | per-step overhead of an actor vs an async worker |",
            "|---|---|---|---|---|",
            f"| RayVectorEnv | {ray_rates['state_1actor']:.1f} | {ray_rates['state_2actor']:.1f} | "
            f"{ray_rates['scaling_2_vs_1']:.2f}x | {ray_rates['overhead_ms_per_step']:+.2f} ms "
            f"(async 1 env in the same run: {ray_rates['async_1env_same_run']:.1f} steps/s) |",
        ]
    if estimate:
        lines += [
            "",
            f"## Estimate: the paper table on a {CLUSTER_CORES}-core Ray cluster",
            "",
            f"The published table has {estimate['cells']} independent cells (task x method x seed) that took "
            f"{estimate['recorded_total_s'] / 3600:.1f} h one after the other on this 2-core machine, the longest "
            f"{estimate['longest_cell_s'] / 60:.0f} min (`benchmarks/results/paper_table.json`, recorded before the "
            f"faster control loop). As Ray tasks of {CORES_PER_CELL} cores each, {estimate['slots']} cells run at "
            f"once; longest-first scheduling of the recorded cell times finishes in "
            f"{estimate['cluster_wall_s'] / 60:.0f} min, bounded below by the longest cell: the cluster cannot "
            "beat one cell's own time, so a faster env (most of a cell is simulation: its evaluation rolls out 50 "
            "episodes of up to 280 steps) is what shortens it further.",
        ]
        if ray_rates:
            step_ms = 1e3 / ray_rates["async_1env_same_run"]
            lines[-1] += (
                f" Sub-envs as Ray actors cost {ray_rates['overhead_ms_per_step']:+.2f} ms per step against an "
                f"async worker in this run ({100 * ray_rates['overhead_ms_per_step'] / step_ms:+.0f}% of a "
                f"{step_ms:.1f} ms state-mode step on this machine)."
            )
    (RESULTS / "env_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
