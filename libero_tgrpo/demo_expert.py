"""Expert demonstrations: the scripted expert run on training placements by a pool of worker processes.

A demonstration set is the successful episodes of :class:`libero_gym.experts.ScriptedExpert` on fresh
training placements (``env.reset(seed=s)`` without ``init_state``): never on the 50 benchmark states, which
are kept for evaluation. By default an episode ends at LIBERO's success (``terminate_on=DEMO_UNTIL``,
``"is_success"``); ``terminate_on="is_placed"`` runs on until the object is released in an undisturbed basket,
so that the demonstrations show the release too (see :data:`libero_tgrpo.stage_configs.DEMO_UNTIL` for why that is not the default). Episode ``j`` of a set with seed ``seed`` resets with ``seed * 100_000 + j`` and
its expert noise is seeded the same way, so a set depends only on ``(task, n, seed, noise, close_steps,
lift, obs_mode)`` and the expert's code.

Example:
    >>> demos = generate_demos(task=4, n=10, seed=0)  # doctest: +SKIP
    >>> demos.num_episodes  # doctest: +SKIP
    10
"""

from __future__ import annotations

import hashlib
import inspect
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np

from libero_gym.experts import LIFT_RULES
from libero_tgrpo.demo_set import DEMO_FORMAT_VERSION, DemoSet
from libero_tgrpo.progress import progress_bar
from libero_tgrpo.stage_configs import DEMO_UNTIL, EXPERT_CLOSE_STEPS, EXPERT_LIFT, is_int
from libero_tgrpo.versions import versions

__all__ = ["EPISODE_SEED_STRIDE", "MAX_ATTEMPTS_FACTOR", "expert_version", "generate_demos"]

EPISODE_SEED_STRIDE = 100_000
"""Episode ``j`` of a set with seed ``seed`` resets with ``seed * EPISODE_SEED_STRIDE + j``."""

MAX_ATTEMPTS_FACTOR = 4
"""At most ``MAX_ATTEMPTS_FACTOR * n`` expert episodes are run to collect ``n`` successful ones."""


def expert_version() -> str:
    """Version stamp of the scripted expert: ``libero_gym``'s version plus a hash of the expert's code.

    Any change to the expert (gains, waypoints, grasp heights) changes the stamp, so cached demonstrations
    made by an older expert are not reused.
    """
    import libero_gym
    from libero_gym import experts, tasks

    digest = hashlib.sha256()
    for module in (experts, tasks):
        digest.update(inspect.getsource(module).encode())
    return f"{libero_gym.__version__}+{digest.hexdigest()[:10]}"


# ---------------------------------------------------------------------------------------------- the worker pool
_WORKER_ENV: dict[str, Any] = {}


def _worker_init(task: int, obs_mode: str, terminate_on: str) -> None:
    import gymnasium as gym

    import libero_gym  # noqa: F401  (registers the ids, sets MUJOCO_GL)

    _WORKER_ENV["env"] = gym.make(f"LiberoObject-Task{task}-v0", obs_mode=obs_mode, terminate_on=terminate_on)
    _WORKER_ENV["task"] = task
    _WORKER_ENV["terminate_on"] = terminate_on


def _expert_episode(args: tuple[int, float, int, int]) -> dict[str, Any]:
    """Run one expert episode in a worker; returns its arrays (observations before each action)."""
    from libero_gym.experts import ExpertConfig, ScriptedExpert, run_expert_episode

    episode_seed, noise, max_steps, close_steps, lift = args
    env = _WORKER_ENV["env"]
    config = ExpertConfig(close_steps=close_steps, lift_rule=lift)
    expert = ScriptedExpert(_WORKER_ENV["task"], config, noise=noise, seed=episode_seed)
    rec = run_expert_episode(env, expert, seed=episode_seed, max_steps=max_steps)
    steps = rec["steps"]
    obs = {k: np.stack([o[k] for o in rec["observations"][:steps]]) for k in rec["observations"][0]}
    success = bool(rec["infos"][-1][_WORKER_ENV["terminate_on"]])
    # The label of each step is the expert's own action; with noise, the executed one differs from it on x and y.
    return {"seed": episode_seed, "success": success, "steps": steps, "obs": obs, "actions": rec["intended_actions"]}


def generate_demos(
    task: int,
    n: int,
    *,
    seed: int = 0,
    noise: float = 0.0,
    close_steps: int = EXPERT_CLOSE_STEPS,
    lift: str = EXPERT_LIFT,
    obs_mode: str = "state",
    workers: int = 2,
    max_steps: int = 280,
    terminate_on: str = DEMO_UNTIL,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DemoSet:
    """Run the scripted expert on training placements until ``n`` episodes succeed.

    Args:
        task: task number 1-10.
        n: number of successful episodes to keep.
        seed: seed of the set (episode ``j`` resets with ``seed * 100_000 + j``).
        noise: standard deviation of the noise on the expert's executed x, y actions (0: deterministic expert);
            the set records the expert's noise-free actions (:attr:`ScriptedExpert.intended`).
        close_steps: steps the expert holds the gripper closed at least before lifting
            (``ExpertConfig.close_steps``; 6 by default, 0: it starts lifting at the first closed step).
        lift: when the expert lifts the closed gripper (``ExpertConfig.lift_rule``): ``"timer"`` (the default) or
            ``"still"`` (at the first step the fingers stop).
        obs_mode: observation mode of the env (``"state"``, ``"rgb"``, ``"rgb_state"``).
        workers: parallel worker processes (forkserver), each with its own env.
        max_steps: step cap per episode (280, the evaluation protocol's).
        terminate_on: the fact that ends an episode and makes it a success (``"is_success"``, the default:
            LIBERO's predicate, object maybe still held; ``"is_placed"``: the object released in an undisturbed
            basket).
        progress: show a tqdm bar.
        log: called with a summary line at the end.

    Returns:
        A :class:`DemoSet` of the first ``n`` successful episodes in seed order.

    Raises:
        ValueError: on bad arguments.
        RuntimeError: if fewer than ``n`` of ``4 n`` expert episodes succeed.
    """
    from libero_gym import TERMINATION_KEYS, get_task
    from tgrpo import ActionTokenizer

    task_obj = get_task(task)
    if terminate_on not in TERMINATION_KEYS:
        raise ValueError(f"terminate_on={terminate_on!r} is not accepted: choose one of {TERMINATION_KEYS}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r} is not accepted: give the number of demonstrations as an int >= 1.")
    if noise < 0:
        raise ValueError(f"noise={noise!r} is not accepted: give a standard deviation >= 0.")
    if not is_int(close_steps) or close_steps < 0:
        raise ValueError(f"close_steps={close_steps!r} is not accepted: give an int >= 0.")
    if lift not in LIFT_RULES:
        raise ValueError(f"lift={lift!r} is not accepted: choose from {', '.join(LIFT_RULES)}.")
    if workers < 1:
        raise ValueError(f"workers={workers!r} is not accepted: give an int >= 1.")
    t0 = time.perf_counter()
    max_episodes = MAX_ATTEMPTS_FACTOR * n
    jobs = [(seed * EPISODE_SEED_STRIDE + j, float(noise), int(max_steps), close_steps, lift)
            for j in range(max_episodes)]
    kept: list[dict[str, Any]] = []
    attempts = 0
    bar = progress_bar(progress, n, f"demos Task{task_obj.task_id}", "demo")
    # A process pool that reports a dead worker (BrokenProcessPool) instead of waiting for it forever.
    pool = ProcessPoolExecutor(workers, mp.get_context("forkserver"), initializer=_worker_init,
                               initargs=(task_obj.task_id, obs_mode, terminate_on))
    try:
        for rec in pool.map(_expert_episode, jobs):
            attempts += 1
            if rec["success"]:
                kept.append(rec)
                bar.update(1)
            if len(kept) == n:
                break
    except BrokenProcessPool as e:
        raise RuntimeError(
            f"a demonstration worker died after {attempts} expert episodes on Task{task_obj.task_id} (killed, or "
            "out of memory?): run again with fewer --workers or more free memory."
        ) from e
    except BaseException:  # an interrupt (Ctrl-C, SIGTERM) or an error: stop now, not after the running episodes
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if len(kept) < n:
        raise RuntimeError(
            f"the scripted expert succeeded in only {len(kept)} of {attempts} episodes on Task{task_obj.task_id}; "
            f"{n} demonstrations were asked for. Ask for fewer, or lower the noise (noise={noise})."
        )
    tokenizer = ActionTokenizer()
    actions = np.concatenate([r["actions"] for r in kept]).astype(np.float32)
    obs = {k: np.concatenate([r["obs"][k] for r in kept]) for k in kept[0]["obs"]}
    elapsed = time.perf_counter() - t0
    meta = {
        "format_version": DEMO_FORMAT_VERSION,
        "task": task_obj.task_id,
        "instruction": task_obj.instruction,
        "n": n,
        "seed": seed,
        "noise": float(noise),
        "obs_mode": obs_mode,
        "max_steps": int(max_steps),
        "terminate_on": terminate_on,
        "expert": "libero_gym.experts.ScriptedExpert",
        "expert_version": expert_version(),
        "expert_close_steps": close_steps,
        "expert_lift": lift,
        "attempts": attempts,
        "expert_success_rate": n / attempts,
        "placements": "training (env.reset(seed) without init_state); never the benchmark states",
        "tokenizer": {"n_bins": tokenizer.n_bins, "low": tokenizer.low, "high": tokenizer.high,
                      "convention": tokenizer.convention},
        "generation_s": round(elapsed, 2),
        "versions": versions(),
    }
    demos = DemoSet(
        obs=obs,
        actions=actions,
        tokens=tokenizer.encode(actions),
        episode_lengths=np.array([r["steps"] for r in kept], dtype=np.int64),
        episode_seeds=np.array([r["seed"] for r in kept], dtype=np.int64),
        meta=meta,
    )
    if log is not None:
        log(
            f"demos: {n} successful expert episodes of {attempts} on Task{task_obj.task_id} "
            f"({demos.num_steps} steps, mean length {demos.episode_lengths.mean():.0f}) in {elapsed:.1f}s"
        )
    return demos

