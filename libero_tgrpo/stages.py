"""The stages of the pipeline, each usable on its own.

demonstrations (:func:`run_demos`) -> SFT (:func:`run_sft`) -> RL (:func:`run_train`) -> evaluation
(:func:`run_eval`). The run directory that times them and, when resuming, reads a finished stage's result back
from disk instead of running it again is :class:`~libero_tgrpo.rundir.RunDir` (also importable from here).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from libero_gym import MAX_EPISODE_STEPS, NUM_INIT_STATES
from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.demo_set import DemoSet
from libero_tgrpo.demos import get_demos, read_demos, select_observations
from libero_tgrpo.envs import env_id, make_eval_envs, make_train_envs
from libero_tgrpo.evaluation import evaluate_benchmark
from libero_tgrpo.files import RunDirError, write_text
from libero_tgrpo.policies import POLICY_KINDS, build_policy, save_policy
from libero_tgrpo.progress import say as _default_say
from libero_tgrpo.rundir import NOT_IDENTITY, RUN_RECORD, RunDir, file_digest, run_identity
from libero_tgrpo.versions import machine, now, versions

__all__ = ["RunDir", "RunDirError", "run_identity", "file_digest", "RUN_RECORD", "NOT_IDENTITY", "SharedEvalEnvs",
           "observation_space", "eval_config_kwargs", "run_demos", "run_sft", "run_train", "run_eval",
           "save_final_policy"]

Say = Callable[[str], None]


class SharedEvalEnvs:
    """Evaluation envs made on first use and shared by the evaluations of a run; :meth:`close` frees them
    (e.g. before training needs the cores). A context manager: closed on exit."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self._envs: Any = None

    def get(self) -> Any:
        if self._envs is None:
            c = self.cfg
            self._envs = make_eval_envs(c.task, min(c.eval.envs, len(c.eval.states)), obs_mode=c.obs_mode,
                                        max_episode_steps=c.eval.max_steps, **c.env_backend, **c.env_kwargs())
        return self._envs

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None

    def __enter__(self) -> SharedEvalEnvs:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def observation_space(task: int, obs_mode: str, **env_kwargs: Any) -> Any:
    """The observation space of one env of ``task`` in ``obs_mode`` (the env is made and closed)."""
    import gymnasium as gym

    e = gym.make(env_id(task), obs_mode=obs_mode, **env_kwargs)
    try:
        return e.observation_space
    finally:
        e.close()


def run_demos(cfg: PipelineConfig, say: Say = _default_say) -> tuple[DemoSet, Path]:
    """Stage 1: load the demonstrations file, or the cached set, or generate and cache it."""
    d = cfg.demos
    if d.demos_path:
        demos = read_demos(d.demos_path)
        say(f"demos: {d.demos_path} ({demos.num_episodes} episodes, {demos.num_steps} steps)")
        if demos.meta.get("task") is not None and int(demos.meta["task"]) != cfg.task:
            raise ValueError(
                f"demonstrations file {d.demos_path!r} is for Task{demos.meta.get('task')}, not Task{cfg.task}."
            )
        return demos, Path(d.demos_path)
    demos, path, _ = get_demos(cfg.task, d.num_demos, seed=cfg.demo_seed, noise=d.demo_noise,
                               obs_mode=cfg.obs_mode, cache_dir=d.demo_cache, workers=d.workers,
                               terminate_on=d.until, close_steps=d.expert_close_steps, lift=d.expert_lift,
                               progress=cfg.progress, log=say)
    return demos, path


def save_final_policy(policy: Any, spec: dict[str, Any], out_dir: Path, **info: Any) -> Path:
    """Write ``out_dir/policy.pt`` and, for a built-in policy, ``policy.safetensors`` + ``policy.json`` (the
    same weights and spec without pickle, for sharing); returns the ``.pt`` path."""
    path = save_policy(policy, spec, out_dir / "policy.pt", **info)
    if spec.get("kind") in POLICY_KINDS:
        save_policy(policy, spec, out_dir / "policy.safetensors", **info)
    return path


def run_sft(
    cfg: PipelineConfig, demos: DemoSet, out_dir: Path, say: Say = _default_say
) -> tuple[Any, dict[str, Any], Path]:
    """Stage 2: a fresh policy cloned from the demonstrations; writes ``policy.pt`` (and for the built-in
    policies ``policy.safetensors`` + ``policy.json``) and ``sft_metrics.jsonl``.

    The SFT weights also become the policy's KL reference for TGRPO.
    """
    from libero_tgrpo.sft import freeze_reference, sft, token_cross_entropy

    space = observation_space(cfg.task, cfg.obs_mode) if cfg.policy in ("state", "vision") else None
    # the demonstrations must hold what the policy's env observes (a Hugging Face VLA: its camera size)
    demos = select_observations(demos, space or observation_space(cfg.task, cfg.obs_mode, **cfg.env_kwargs()),
                                source=f"demonstrations ({cfg.demos.demos_path or 'expert'})")
    policy, spec = build_policy(cfg.policy, space, seed=cfg.seed, hidden=cfg.hidden, **cfg.policy_kwargs())
    sft_cfg = cfg.sft_config()
    ce_before = token_cross_entropy(policy, demos)
    history = sft(policy, demos, sft_cfg, progress=cfg.progress, log=say if cfg.progress else None)
    freeze_reference(policy)
    write_text(out_dir / "sft_metrics.jsonl", "".join(json.dumps(row) + "\n" for row in history))
    path = save_final_policy(
        policy,
        spec,
        out_dir,
        stage="sft",
        task=cfg.task,
        obs_mode=cfg.obs_mode,
        seed=cfg.seed,
        sft=sft_cfg.to_dict(),
        demos={k: demos.meta.get(k) for k in ("task", "n", "seed", "noise", "expert_version", "format_version")},
        token_cross_entropy_before=ce_before,
        token_cross_entropy_after=history[-1]["loss"] if history else None,
    )
    say(f"sft: token cross-entropy {ce_before:.3f} -> {history[-1]['loss']:.3f} nats; policy written to {path}")
    return policy, spec, path


def run_train(
    cfg: PipelineConfig, policy: Any, spec: dict[str, Any], out_dir: Path, say: Say = _default_say
) -> Any:
    """Stage 3: TGRPO (or an ablation, or PPO) from ``policy`` on training placements of the task.

    Writes the run under ``out_dir`` (``metrics.jsonl``, ``tb/``, ``checkpoint.pt``, ``training_curve.png``,
    ``init_policy.pt`` = the starting policy with its spec, ``policy.pt`` = the trained one, for the built-in
    policies also ``policy.safetensors`` + ``policy.json`` and ``snapshots/``; ``videos/`` with
    ``video_interval``; see :mod:`libero_tgrpo.hooks`). With ``select='heldout'`` also ``selection.json`` and
    ``selected_policy.pt`` (:mod:`libero_tgrpo.selection`); ``policy.pt`` stays the final policy, and the result's
    policy holds the chosen weights (``result.selection`` says which).

    Returns:
        The :class:`tgrpo.TrainResult`.
    """
    import tgrpo
    from libero_tgrpo.hooks import training_hook

    out_dir.mkdir(parents=True, exist_ok=True)
    init_path = out_dir / "init_policy.pt"
    if not (cfg.resume and init_path.exists()):
        save_policy(policy, spec, init_path, stage="init", task=cfg.task, obs_mode=cfg.obs_mode)
    rl_cfg = cfg.rl_config(out_dir)
    a1, a2 = cfg.alphas
    selector = None
    if cfg.select == "heldout":
        from libero_tgrpo.selection import HeldoutSelector

        selector = HeldoutSelector(cfg.task, out_dir, spec, placements=cfg.select_placements,
                                   points=cfg.select_points, obs_mode=cfg.obs_mode, max_steps=cfg.eval.max_steps,
                                   num_envs=cfg.eval.envs, seed=cfg.seed, env_backend=cfg.env_backend,
                                   env_kwargs=cfg.env_kwargs(), say=say)
    envs = make_train_envs(cfg.task, cfg.num_envs, obs_mode=cfg.obs_mode, shared_placement=cfg.shared_placement,
                           **cfg.env_backend, **cfg.env_kwargs())
    try:
        if selector is not None:
            selector.consider(policy, 0, 0.0)
        if cfg.method == "ppo":
            from tgrpo.baselines import train_ppo

            say(f"ppo: Task{cfg.task}, M={cfg.num_envs}, {rl_cfg.iterations} iterations of <= {rl_cfg.max_steps} "
                "steps")
            if cfg.video_interval or cfg.snapshot_interval:
                say("ppo: no periodic videos or snapshots (PPO's iteration hook serves held-out selection only)")
            select_fn = None if selector is None else (lambda p, k, done: selector.consider(p, k + 1, done))
            result = train_ppo(envs, policy, config=rl_cfg, eval_fn=select_fn)
        else:
            say(f"{cfg.method}: Task{cfg.task}, alpha1={a1:g}, alpha2={a2:g}, M={cfg.num_envs}, "
                f"{rl_cfg.iterations} iterations of <= {rl_cfg.max_steps} steps")
            hook, every = training_hook(cfg, envs, spec, out_dir, say, selector=selector)
            if hook is not None:
                rl_cfg = dataclasses.replace(rl_cfg, eval_interval=every)
            result = tgrpo.train(envs, policy, rl_cfg, eval_fn=hook)
    finally:
        envs.close()
        if selector is not None:
            selector.close()
    save_final_policy(result.policy, spec, out_dir, stage=cfg.method, task=cfg.task, obs_mode=cfg.obs_mode,
                      seed=cfg.seed, alphas=[a1, a2], iterations=rl_cfg.iterations)
    if selector is not None:
        chosen = selector.apply(result.policy)
        result.selection = selector.record()  # type: ignore[attr-defined]
        say(f"selection: {chosen.label} (iteration {chosen.iteration}) is the run's policy: held-out placed "
            f"{chosen.placed_rate:.0%}, LIBERO success {chosen.success_rate:.0%}")
    return result


def run_eval(
    policy: Any,
    task: int,
    *,
    obs_mode: str = "state",
    states: Sequence[int] = tuple(range(NUM_INIT_STATES)),
    num_envs: int = 2,
    max_steps: int = MAX_EPISODE_STEPS,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    say: Say = _default_say,
    envs: Any = None,
    env_backend: dict[str, Any] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a policy on benchmark states (one episode each); the result carries versions and seeds.

    ``env_backend`` (:attr:`PipelineConfig.env_backend`) chooses where the envs it makes run (e.g. Ray actors
    across a cluster); ``env_kwargs`` (:meth:`PipelineConfig.env_kwargs`, e.g. the camera ``image_size`` of a
    Hugging Face VLA) go to each env it makes; ``envs`` gives it envs made elsewhere."""
    own = envs is None
    if own:
        envs = make_eval_envs(task, min(num_envs, len(states)), obs_mode=obs_mode, max_episode_steps=max_steps,
                              **(env_backend or {}), **(env_kwargs or {}))
    try:
        res = evaluate_benchmark(envs, policy, list(states), max_steps=max_steps, temperature=temperature,
                                 seed=seed, progress=progress, log=say)
    finally:
        if own:
            envs.close()
    res.update(task=int(task), obs_mode=obs_mode, num_envs=int(envs.num_envs),
               vector_env=type(getattr(envs, "unwrapped", envs)).__name__, versions=versions(),
               machine=machine(), date=now())
    return res


def eval_config_kwargs(cfg: PipelineConfig) -> dict[str, Any]:
    """:func:`run_eval`'s keyword arguments from a pipeline config."""
    e = cfg.eval
    return dict(obs_mode=cfg.obs_mode, states=e.states, num_envs=e.envs, max_steps=e.max_steps,
                temperature=e.temperature, seed=cfg.seed, progress=cfg.progress, env_backend=cfg.env_backend,
                env_kwargs=cfg.env_kwargs())
