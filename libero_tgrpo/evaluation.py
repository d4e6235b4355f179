"""Benchmark evaluation: the 50 fixed initial states of a task, 280 steps at most, and rollout videos.

Protocol (LIBERO-Object, as OpenVLA and the TGRPO paper): one episode from each of the task's 50
benchmark states, each capped at 280 policy steps after the env's 10 warm-up steps, ending at LIBERO's
success. Decoding is greedy by default (``temperature=0``: the argmax token of each action dimension);
``temperature > 0`` samples, seeded.

Two metrics per episode, reported side by side:

- ``success``: LIBERO's own predicate (``info["is_success"]``) reached, comparable with published numbers.
  It also counts a basket knocked over with the object still gripped inside it.
- ``placed``: the strict success. LIBERO's success reached, then the release check of the env (the gripper
  opened and the arm held still for 20 steps, ``libero_gym.PlacementConfig.release_steps``) after which
  the object is still in the basket, no finger touches it and the basket is undisturbed
  (``info["placed_after_release"]``, ``docs/info_contract.md``).

The sub-envs of a vector env work through the list of states as a queue: a sub-env whose episode ends is
sent to the next state at its autoreset (``envs.set_attr("next_init_state", ...)``), so no env waits for
another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from libero_gym import MAX_EPISODE_STEPS, NUM_INIT_STATES
from libero_tgrpo.progress import progress_bar
from tgrpo.rollout import read_instructions

__all__ = ["evaluate_benchmark", "record_video", "summarize_episodes"]


def _read(info: dict[str, Any], key: str, m: int, default: Any = 0) -> np.ndarray:
    if key not in info:
        return np.full(m, default)
    vals = np.asarray(info[key])
    present = np.asarray(info.get("_" + key, np.ones(m, dtype=bool)), dtype=bool)
    return np.where(present, vals, default)


def _set_init_states(envs: Any, states: list[int | None]) -> None:
    """Benchmark state of each sub-env's next reset (None: a training placement), through the wrappers."""
    base = getattr(envs, "unwrapped", envs)
    base.set_attr("next_init_state", states)


def _set_placement_seeds(envs: Any, seeds: list[int | None]) -> None:
    """Training placement (by its placement seed) of each sub-env's next reset (None: a random one)."""
    base = getattr(envs, "unwrapped", envs)
    base.set_attr("next_placement_seed", seeds)


def summarize_episodes(episodes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Success rates and length statistics of per-episode records (``success``, ``placed``, ``length``,
    ``max_stage``).

    ``success_rate``/``successes`` count LIBERO's success, ``placed_rate``/``placed`` the strict one (None
    when a record has no ``placed``). ``mean_length_success`` is None when no episode succeeded.
    """
    succ = np.array([e["success"] for e in episodes], dtype=bool)
    placed = None if any("placed" not in e for e in episodes) else np.array([e["placed"] for e in episodes], bool)
    lengths = np.array([e["length"] for e in episodes], dtype=float)
    stages = np.array([e.get("max_stage", -1) for e in episodes], dtype=float)
    return {
        "success_rate": float(succ.mean()) if succ.size else float("nan"),
        "successes": int(succ.sum()),
        "placed_rate": None if placed is None else (float(placed.mean()) if placed.size else float("nan")),
        "placed": None if placed is None else int(placed.sum()),
        "episodes": int(succ.size),
        "mean_length": float(lengths.mean()) if lengths.size else float("nan"),
        "mean_length_success": float(lengths[succ].mean()) if succ.any() else None,
        "mean_max_stage": float(stages.mean()) if stages.size else float("nan"),
    }


def _check_eval_env(envs: Any) -> None:
    base = getattr(envs, "unwrapped", envs)
    release = tuple(base.get_attr("release_check"))
    ends = tuple(base.get_attr("terminate_on"))
    if not all(release) or any(end != "is_success" for end in ends):
        raise ValueError(
            f"the evaluation env has release_check={release} and terminate_on={ends}: benchmark evaluation "
            "needs episodes that end at LIBERO's success (terminate_on='is_success') followed by the release "
            "check (release_check=True). Build it with libero_tgrpo.envs.make_eval_envs."
        )


def evaluate_benchmark(
    envs: Any,
    policy: Any,
    states: Sequence[int] | None = None,
    *,
    max_steps: int = MAX_EPISODE_STEPS,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    placement_seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate ``policy`` on benchmark initial states, one episode per state.

    With ``placement_seeds`` it evaluates on seeded training placements instead (one episode per placement
    seed, the env's ``placement_seed`` reset option): held-out scenes from the training distribution, for
    choosing settings without looking at the benchmark states.

    Args:
        envs: a LIBERO-Object vector env (:func:`libero_tgrpo.envs.make_eval_envs`) whose step limit is
            ``max_steps``, whose episodes end at LIBERO's success (``terminate_on="is_success"``) and whose
            sub-envs run the release check (``release_check=True``); the staged-reward wrapper is optional
            (it adds ``max_stage`` to the records).
        policy: a :class:`tgrpo.TokenActionPolicy`.
        states: benchmark state indices (default: all 50; must be None with ``placement_seeds``).
        max_steps: step cap of an episode; the env must truncate there (280 for the registered ids).
        temperature: 0 for greedy decoding, > 0 to sample.
        seed: seeds torch's sampler (with ``temperature > 0``) and the env resets.
        progress: show a tqdm bar over episodes.
        log: called with a summary line.
        placement_seeds: evaluate on these training placements instead of benchmark states (ints >= 0).

    Returns:
        ``summary`` (:func:`summarize_episodes`), ``episodes`` (one record per state or placement:
        ``init_state`` (None for a placement), ``placement_seed`` (with ``placement_seeds``), ``success``,
        ``placed``, ``length``, ``max_stage``), ``temperature``, ``max_steps``, ``seed``, ``env_steps``,
        ``time_s``, ``steps_per_s``.

    Raises:
        ValueError: for a state outside 0-49, a negative placement seed, both states and placement seeds, an
            env without the release check or with another end of episode than LIBERO's success, or an env that
            runs an episode past ``max_steps``.
    """
    if placement_seeds is not None:
        if states is not None:
            raise ValueError("give either states (benchmark states) or placement_seeds (training placements), "
                             "not both.")
        items = [int(s) for s in placement_seeds]
        bad = [s for s in items if s < 0]
        if bad or not items:
            raise ValueError(f"placement_seeds={bad or items} are not accepted: give one or more ints >= 0.")
        set_next = _set_placement_seeds
    else:
        items = list(range(NUM_INIT_STATES)) if states is None else [int(s) for s in states]
        bad = [s for s in items if not 0 <= s < NUM_INIT_STATES]
        if bad or not items:
            raise ValueError(f"states={bad or items} are not accepted: give benchmark states in "
                             f"0-{NUM_INIT_STATES - 1}.")
        set_next = _set_init_states
    key = "init_state" if placement_seeds is None else "placement_seed"
    if temperature < 0:
        raise ValueError(f"temperature={temperature!r} is not accepted: 0 (greedy) or > 0 (sampling).")
    _check_eval_env(envs)
    m = int(envs.num_envs)
    t_start = time.perf_counter()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    queue = list(range(len(items)))  # indices into items, in order
    current: list[int | None] = [queue.pop(0) if queue else None for _ in range(m)]
    set_next(envs, [None if c is None else items[c] for c in current])
    obs, info = envs.reset(seed=seed)
    instr = read_instructions(envs, info)
    steps = np.zeros(m, dtype=int)
    max_stage = _read(info, "stage", m).astype(int)
    success = np.zeros(m, dtype=bool)
    resetting = np.zeros(m, dtype=bool)  # NEXT_STEP autoreset: this step of sub-env i is its reset step
    records: list[dict[str, Any]] = []
    env_steps = 0
    bar = progress_bar(progress, len(items), "eval", "ep")
    try:
        while any(c is not None for c in current) or resetting.any():
            with torch.no_grad():
                tokens, _ = policy.sample(obs, instr, temperature)
            actions = np.asarray(policy.tokens_to_actions(tokens), dtype=np.float32)
            obs, _, terminated, truncated, info = envs.step(actions)
            instr = read_instructions(envs, info, previous=instr)
            stage = _read(info, "stage", m).astype(int)
            is_success = _read(info, "is_success", m, False).astype(bool)
            released_ok = _read(info, "placed_after_release", m, False).astype(bool)
            done = np.asarray(terminated, bool) | np.asarray(truncated, bool)
            next_states: list[int | None] = [None] * m
            for i in range(m):
                if resetting[i]:
                    # this was sub-env i's reset step: its new episode starts here
                    resetting[i] = False
                    steps[i], success[i], max_stage[i] = 0, False, stage[i]
                    continue
                if current[i] is None:
                    continue
                steps[i] += 1
                env_steps += 1
                success[i] |= is_success[i]
                max_stage[i] = max(max_stage[i], stage[i])
                if steps[i] > max_steps:
                    raise ValueError(
                        f"sub-env {i} ran past max_steps={max_steps} without ending: build the eval env with "
                        f"max_episode_steps={max_steps} (libero_tgrpo.envs.make_eval_envs)."
                    )
                if done[i]:
                    records.append(
                        {
                            "index": current[i],
                            "init_state": items[current[i]] if key == "init_state" else None,
                            **({} if key == "init_state" else {"placement_seed": items[current[i]]}),
                            "success": bool(success[i]),
                            "placed": bool(success[i] and released_ok[i]),
                            "length": int(steps[i]),
                            "max_stage": int(max_stage[i]),
                        }
                    )
                    bar.update(1)
                    current[i] = queue.pop(0) if queue else None
                    next_states[i] = current[i]
                    resetting[i] = current[i] is not None
            if any(s is not None for s in next_states):
                set_next(envs, [None if c is None else items[c] for c in next_states])
    finally:
        bar.close()
        torch.random.set_rng_state(generator_state)
    records.sort(key=lambda r: r["index"])
    for r in records:
        del r["index"]
    elapsed = time.perf_counter() - t_start
    out = {
        "summary": summarize_episodes(records),
        "episodes": records,
        "temperature": float(temperature),
        "max_steps": int(max_steps),
        "seed": int(seed),
        "env_steps": int(env_steps),
        "time_s": elapsed,
        "steps_per_s": env_steps / max(elapsed, 1e-9),
    }
    if log is not None:
        s = out["summary"]
        log(
            f"eval: LIBERO success {s['successes']}/{s['episodes']} ({100 * s['success_rate']:.0f}%), placed "
            f"{s['placed']}/{s['episodes']} ({100 * s['placed_rate']:.0f}%), mean length "
            f"{s['mean_length']:.0f}, {env_steps} steps in {elapsed:.1f}s ({out['steps_per_s']:.0f} steps/s)"
        )
    return out


def record_video(
    policy: Any,
    task: int,
    path: str | Path,
    *,
    init_state: int = 0,
    obs_mode: str = "state",
    max_steps: int = MAX_EPISODE_STEPS,
    temperature: float = 0.0,
    seed: int = 0,
    fps: int = 20,
    render_size: int = 256,
) -> dict[str, Any]:
    """Roll the policy out from one benchmark state in a single env and write an mp4 of the agentview camera.

    The episode ends as in :func:`evaluate_benchmark` (LIBERO's success, then the release check, whose
    steps are not in the video).

    Returns:
        ``path``, ``init_state``, ``success`` (LIBERO's), ``placed``, ``length``, ``frames``.
    """
    import gymnasium as gym
    import imageio.v2 as imageio

    from libero_tgrpo.envs import env_id

    env = gym.make(env_id(task), obs_mode=obs_mode, render_mode="rgb_array", render_size=render_size,
                   release_check=True)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        obs, info = env.reset(seed=seed, options={"init_state": int(init_state)})
        frames = [env.render()]
        success, placed, length = False, False, 0
        for _ in range(max_steps):
            batched = {k: np.asarray(v)[None] for k, v in obs.items()}
            with torch.no_grad():
                tokens, _ = policy.sample(batched, [info.get("instruction", "")], temperature)
            action = np.asarray(policy.tokens_to_actions(tokens), dtype=np.float32)[0]
            obs, _, terminated, truncated, info = env.step(action)
            frames.append(env.render())
            length += 1
            success |= bool(info["is_success"])
            placed = success and bool(info["placed_after_release"])
            if terminated or truncated:
                break
    finally:
        env.close()
        torch.random.set_rng_state(generator_state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(path, [np.asarray(f) for f in frames], fps=fps)
    return {"path": str(path), "init_state": int(init_state), "success": success, "placed": placed,
            "length": length, "frames": len(frames)}
