"""What the pipeline does between TGRPO iterations: evaluation, policy snapshots, evaluation videos.

:func:`training_hook` gives :func:`tgrpo.train` one ``eval_fn`` that, at iteration ``k`` (``n = k + 1``
iterations done):

* every ``rl.eval_interval`` iterations (and at the end): the trainer's default evaluation on the training
  envs (greedy, ``num_envs`` episodes), logged under ``eval/``;
* every ``snapshot_interval`` iterations: ``snapshots/iter_NNNN.safetensors`` + ``.json`` of a built-in
  policy (:func:`libero_tgrpo.policies.save_policy`; ``libero-tgrpo eval`` reads it);
* every ``video_interval`` iterations: one greedy rollout from a benchmark state (``video_state``, else 0)
  rendered to ``videos/iter_NNNN.mp4``, logged to TensorBoard (an animated GIF) and to the active W&B run
  (:func:`tgrpo.logger.log_video`); ``eval/video_success`` records whether it succeeded;
* with a :class:`libero_tgrpo.selection.HeldoutSelector`: at its selection points, the held-out score of the
  policy (``eval/heldout_placed``, ``eval/heldout_success``), the best candidate kept.

The trainer calls its hook every ``eval_interval`` iterations; the pipeline runs it with the greatest common
divisor of the three intervals, and the hook does at each call what is due.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.policies import POLICY_KINDS, save_policy

__all__ = ["training_hook", "VIDEO_RENDER_SIZE"]

VIDEO_RENDER_SIZE = 128
"""Side in pixels of the periodic evaluation videos (rendering time barely depends on it; file size does)."""

Hook = Callable[[Any, int], dict[str, float]]


def training_hook(
    cfg: PipelineConfig, envs: Any, spec: dict[str, Any], out_dir: Path, say: Callable[[str], None] | None = None,
    selector: Any = None,
) -> tuple[Hook | None, int]:
    """The hook and the interval to run :func:`tgrpo.train` with.

    Args:
        cfg: the pipeline config (``rl.eval_interval``, ``snapshot_interval``, ``video_interval``,
            ``video_state``, ``eval.max_steps``).
        envs: the training vector envs (the default evaluation runs on them).
        spec: the policy's spec (snapshots are written for the built-in kinds only).
        out_dir: the training run's directory.
        say: where a line per video goes.
        selector: a :class:`libero_tgrpo.selection.HeldoutSelector` to offer the policy after every iteration.

    Returns:
        ``(eval_fn, eval_interval)``: ``(None, 0)`` when nothing is periodic.
    """
    rl = cfg.rl
    evaluate_every = rl.eval_interval
    snapshot_every = cfg.snapshot_interval if spec.get("kind") in POLICY_KINDS else 0
    video_every = cfg.video_interval
    intervals = [i for i in (evaluate_every, snapshot_every, video_every, 1 if selector else 0) if i > 0]
    if not intervals:
        return None, 0
    last = rl.iterations - 1

    def hook(policy: Any, k: int) -> dict[str, float]:
        n = k + 1
        values: dict[str, float] = {}
        if evaluate_every and (n % evaluate_every == 0 or k == last):
            from tgrpo.evaluation import evaluate

            values.update(evaluate(envs, policy, episodes=int(envs.num_envs), max_steps=rl.max_steps))
        if snapshot_every and n % snapshot_every == 0:
            save_policy(policy, spec, out_dir / "snapshots" / f"iter_{n:04d}.safetensors", stage=cfg.method,
                        task=cfg.task, obs_mode=cfg.obs_mode, seed=cfg.seed, iteration=n)
        if video_every and n % video_every == 0:
            values["video_success"] = _video(cfg, policy, k, out_dir, say)
        if selector is not None:
            values.update(selector.consider(policy, n, n / rl.iterations))
        return values

    return hook, math.gcd(*intervals)


def _video(cfg: PipelineConfig, policy: Any, k: int, out_dir: Path, say: Callable[[str], None] | None) -> float:
    import imageio.v2 as imageio

    from libero_tgrpo.evaluation import record_video
    from tgrpo.logger import log_video

    state = cfg.video_state if cfg.video_state is not None else 0
    path = out_dir / "videos" / f"iter_{k + 1:04d}.mp4"
    rec = record_video(policy, cfg.task, path, init_state=state, obs_mode=cfg.obs_mode, max_steps=cfg.eval.max_steps,
                       seed=cfg.seed, render_size=VIDEO_RENDER_SIZE)
    with imageio.get_reader(path, "ffmpeg") as reader:
        frames = [frame for frame in reader]
    sinks = log_video(out_dir, "eval/video", frames, step=k, video_path=path, formats=cfg.rl.log_formats)
    if say is not None:
        say(f"video: iteration {k + 1}, benchmark state {state}, {'success' if rec['success'] else 'no success'} "
            f"in {rec['length']} steps -> {path} ({', '.join(sinks) or 'file only'})")
    return float(rec["success"])
