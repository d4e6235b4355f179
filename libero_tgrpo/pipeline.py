"""The stages of the pipeline and the main job that chains them.

demonstrations -> SFT -> evaluation -> TGRPO -> evaluation -> table, plot and video.

Each stage is a function usable on its own (the command line calls them); :func:`run_main_job` runs them
all with the built-in defaults of :class:`PipelineConfig`, times each stage and writes everything under one
output directory. With ``resume=True`` the stages whose results are already on disk are skipped and TGRPO
continues from its last checkpoint, so a killed run is continued by running the same command again with
``--resume``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tgrpo
from libero_gym import MAX_EPISODE_STEPS, NUM_INIT_STATES, get_task
from libero_tgrpo.demos import DemoSet, get_demos, load_demos
from libero_tgrpo.envs import TRAIN_SUCCESS_KEY, env_id, make_eval_envs, make_train_envs
from libero_tgrpo.evaluation import evaluate_benchmark, record_video
from libero_tgrpo.paper import PAPER_TABLE1, paper_alphas
from libero_tgrpo.plots import plot_main_job
from libero_tgrpo.policies import build_policy, load_policy, obs_mode_for, save_policy
from libero_tgrpo.sft import SFTConfig, freeze_reference, sft, token_cross_entropy
from libero_tgrpo.versions import machine, now, versions

__all__ = [
    "METHODS",
    "PipelineConfig",
    "method_alphas",
    "command_line",
    "record_run",
    "run_demos",
    "run_sft",
    "run_train",
    "run_eval",
    "run_main_job",
    "before_after_table",
]

log = logging.getLogger("libero_tgrpo")

METHODS = ("tgrpo", "step_only", "traj_only", "ppo")
"""RL methods: TGRPO (eq. 8 with both terms), its two ablations, and PPO with a learned value head."""

_LABELS = {"tgrpo": "TGRPO", "step_only": "step-only", "traj_only": "trajectory-only", "ppo": "PPO"}


def method_alphas(
    method: str,
    task: int,
    alpha1: float | None = None,
    alpha2: float | None = None,
    normalize: bool = True,
) -> tuple[float, float]:
    """``(alpha1, alpha2)`` of a method on a task: the paper's per-task values unless given.

    With ``normalize`` (the default) the pair is divided by ``alpha1 + alpha2``: the paper's *ratio* is
    kept and the fused advantage has the same scale on every task. The paper's raw pairs differ in scale by
    up to 15x (Task3: 10 and 5; Task4: 0.35 and 0.65), and with one learning rate and KL weight for all tasks
    the large pairs overpower the KL penalty: with the raw pair (10, 1), TGRPO on Task1 drifted to a
    reference KL of about 9 and fell from 28% (SFT) to 0% (``docs/pipeline.md``). Pairs that already sum to
    1 (Tasks 4, 5, 6, 9 and 10) are unchanged.

    ``step_only`` then sets ``alpha2 = 0`` and ``traj_only`` sets ``alpha1 = 0``; the other weight keeps its
    value, as in the paper's ablations. PPO does not use them.

    Raises:
        ValueError: for an unknown method, a negative weight, or two zero weights.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not accepted: choose one of {', '.join(METHODS)}.")
    p1, p2 = paper_alphas(task)
    a1 = p1 if alpha1 is None else float(alpha1)
    a2 = p2 if alpha2 is None else float(alpha2)
    for name, v in (("alpha1", a1), ("alpha2", a2)):
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}={v!r} is not accepted: it must be a finite number >= 0.")
    if a1 + a2 <= 0:
        raise ValueError(
            f"alpha1={a1!r} and alpha2={a2!r} are not accepted: at least one must be > 0 (with both 0 the "
            "advantage is 0 and the policy does not learn); use --method step_only or traj_only for ablations."
        )
    if normalize:
        total = a1 + a2
        a1, a2 = a1 / total, a2 / total
    if method == "step_only":
        a2 = 0.0
    elif method == "traj_only":
        a1 = 0.0
    return a1, a2


@dataclass
class PipelineConfig:
    """Every option of the pipeline; the defaults are the main job's built-in settings (Task4, state policy).

    The SFT stage is deliberately modest (few demonstrations, a small network, few epochs) so that the
    supervised policy leaves room for reinforcement learning, as the paper's SFT baselines do.
    """

    task: int = 4
    """LIBERO-Object task number 1-10 (paper numbering; 4 is the bbq sauce)."""
    policy: str = "state"
    """``"state"`` (built-in MLP on the 29-dim state), ``"vision"`` (cameras + instruction + state) or a
    Hugging Face model directory / Hub id."""
    seed: int = 0
    """Seed of the policy initialisation, SFT, TGRPO and the demonstrations (unless ``demo_seed``)."""
    output_dir: str = "outputs/main"
    """Where every result of the run goes."""
    resume: bool = False
    """Skip stages whose results exist in ``output_dir`` and continue TGRPO from its checkpoint."""

    num_demos: int = 20
    """Successful expert episodes to clone."""
    demo_seed: int | None = None
    """Seed of the demonstration set (None: ``seed``)."""
    demo_noise: float = 0.0
    """Standard deviation of the expert's position-action noise."""
    demo_cache: str = "outputs/demos"
    """Directory of cached demonstration sets (shared between runs)."""
    demos_path: str | None = None
    """Use this demonstrations file instead of the cache."""
    workers: int = 2
    """Worker processes that generate demonstrations."""

    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of the state or vision policy."""
    sft_epochs: int = 100
    """Passes over the demonstrations."""
    sft_lr: float = 3e-3
    """SFT learning rate (AdamW)."""
    sft_batch_size: int = 128
    """SFT minibatch size (time steps)."""

    method: str = "tgrpo"
    """``tgrpo``, ``step_only`` (alpha2 = 0), ``traj_only`` (alpha1 = 0) or ``ppo``."""
    alpha1: float | None = None
    """Weight of the step advantage (None: the paper's value for the task, ``libero_tgrpo.PAPER_ALPHAS``)."""
    alpha2: float | None = None
    """Weight of the trajectory advantage (None: the paper's value for the task)."""
    normalize_alphas: bool = True
    """Divide ``(alpha1, alpha2)`` by their sum, keeping their ratio (see :func:`method_alphas`)."""
    num_envs: int = 8
    """Group size M: parallel envs per TGRPO group (>= 2)."""
    iterations: int = 30
    """TGRPO iterations (groups); the paper uses 30 episodes per task."""
    max_steps: int = 200
    """Step cap of a training trajectory (the paper's 200)."""
    lr: float | None = 1e-4
    """RL learning rate (None: the policy's recommended one, 1e-2 for the MLP from scratch; fine-tuning an
    SFT policy with many per-step updates needs a much smaller one)."""
    temperature: float = 1.0
    """Sampling temperature of training rollouts."""
    kl_beta: float = 0.04
    """Weight of the KL penalty to the SFT policy."""
    clip_eps: float = 0.2
    """PPO-style clipping range of the ratio."""
    update_schedule: str = "per_step"
    """``per_step`` (the paper's Algorithm 1) or ``minibatch``."""
    rl_epochs: int = 1
    """Passes over each group's data."""
    minibatch_size: int = 256
    """Samples per optimizer step in the minibatch schedule and in PPO."""
    ppo_epochs: int = 4
    """PPO only: passes over each rollout (CleanRL's and ``tgrpo.baselines.PPOConfig``'s default)."""
    rollout_mode: str = "paper"
    """``paper`` (a group ends at its first success) or ``independent``."""
    shared_placement: bool = True
    """All envs of a group start from one training placement."""

    eval_states: tuple[int, ...] = tuple(range(NUM_INIT_STATES))
    """Benchmark states to evaluate on (default: all 50)."""
    eval_envs: int = 2
    """Parallel envs of the evaluation."""
    eval_max_steps: int = MAX_EPISODE_STEPS
    """Step cap of an evaluation episode (280)."""
    eval_temperature: float = 0.0
    """0: greedy decoding (argmax token); > 0 samples."""
    video: bool = True
    """Write a rollout video of the final policy (greedy, from benchmark state ``video_state``)."""
    video_state: int | None = None
    """Benchmark state of the rollout video; None: the first state the final policy solved in the evaluation
    (the first evaluated state if it solved none)."""
    progress: bool = True
    """Progress bars and per-iteration log lines."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values recorded with the run."""

    def __post_init__(self) -> None:
        self.task = get_task(self.task).task_id
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not accepted: choose one of {', '.join(METHODS)}.")
        method_alphas(self.method, self.task, self.alpha1, self.alpha2, self.normalize_alphas)
        if not isinstance(self.num_envs, int) or self.num_envs < 2:
            raise ValueError(
                f"num_envs={self.num_envs!r} is not accepted: a TGRPO group needs at least 2 parallel envs "
                "to compare (give --num-envs 2 or more)."
            )
        if self.num_demos < 1:
            raise ValueError(f"num_demos={self.num_demos!r} is not accepted: give an int >= 1.")
        if self.eval_envs < 1:
            raise ValueError(f"eval_envs={self.eval_envs!r} is not accepted: give an int >= 1.")
        bad = [s for s in self.eval_states if not 0 <= int(s) < NUM_INIT_STATES]
        if bad or not self.eval_states:
            raise ValueError(
                f"eval_states={list(bad) or list(self.eval_states)} is not accepted: benchmark states are "
                f"0-{NUM_INIT_STATES - 1}."
            )
        self.hidden = tuple(int(h) for h in self.hidden)
        self.eval_states = tuple(int(s) for s in self.eval_states)

    @property
    def obs_mode(self) -> str:
        """Observation mode of the policy's env."""
        return obs_mode_for(self.policy)

    @property
    def alphas(self) -> tuple[float, float]:
        """``(alpha1, alpha2)`` of the method on the task."""
        return method_alphas(self.method, self.task, self.alpha1, self.alpha2, self.normalize_alphas)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["eval_states"] = list(self.eval_states)
        d["alphas"] = list(self.alphas)
        return d


# ---------------------------------------------------------------------------------------------- helpers
def _say(msg: str) -> None:
    log.info(msg)
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)


# ---------------------------------------------------------------------------------------------- stages
def run_demos(cfg: PipelineConfig, say: Callable[[str], None] = _say) -> tuple[DemoSet, Path]:
    """Stage 1: load the demonstrations file, or the cached set, or generate and cache it."""
    if cfg.demos_path:
        demos = load_demos(cfg.demos_path)
        say(f"demos: {cfg.demos_path} ({demos.num_episodes} episodes, {demos.num_steps} steps)")
        if int(demos.meta.get("task", cfg.task)) != cfg.task:
            raise ValueError(
                f"demonstrations file {cfg.demos_path!r} is for Task{demos.meta.get('task')}, not Task{cfg.task}."
            )
        return demos, Path(cfg.demos_path)
    seed = cfg.seed if cfg.demo_seed is None else cfg.demo_seed
    demos, path, _ = get_demos(
        cfg.task,
        cfg.num_demos,
        seed=seed,
        noise=cfg.demo_noise,
        obs_mode=cfg.obs_mode,
        cache_dir=cfg.demo_cache,
        workers=cfg.workers,
        progress=cfg.progress,
        log=say,
    )
    return demos, path


def run_sft(
    cfg: PipelineConfig, demos: DemoSet, out_dir: Path, say: Callable[[str], None] = _say
) -> tuple[Any, dict[str, Any], Path]:
    """Stage 2: a fresh policy cloned from the demonstrations; writes ``policy.pt`` and ``sft_metrics.jsonl``.

    The SFT weights also become the policy's KL reference for TGRPO.
    """
    space = _single_observation_space(env_id(cfg.task), cfg.obs_mode)
    policy, spec = build_policy(cfg.policy, space, seed=cfg.seed, hidden=cfg.hidden)
    sft_cfg = SFTConfig(epochs=cfg.sft_epochs, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size, seed=cfg.seed)
    ce_before = token_cross_entropy(policy, demos)
    history = sft(policy, demos, sft_cfg, progress=cfg.progress, log=say if cfg.progress else None)
    freeze_reference(policy)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "sft_metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    path = save_policy(
        policy,
        spec,
        out_dir / "policy.pt",
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


def _single_observation_space(env: str, obs_mode: str) -> Any:
    import gymnasium as gym

    e = gym.make(env, obs_mode=obs_mode)
    try:
        return e.observation_space
    finally:
        e.close()


def run_train(
    cfg: PipelineConfig,
    policy: Any,
    spec: dict[str, Any],
    out_dir: Path,
    say: Callable[[str], None] = _say,
) -> tgrpo.TrainResult:
    """Stage 3: TGRPO (or an ablation, or PPO) from ``policy`` on training placements of the task.

    Writes the run under ``out_dir`` (``metrics.jsonl``, ``checkpoint.pt``, ``training_curve.png``,
    ``init_policy.pt`` = the starting policy with its spec, ``policy.pt`` = the trained one).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    init_path = out_dir / "init_policy.pt"
    if not (cfg.resume and init_path.exists()):
        save_policy(policy, spec, init_path, stage="init", task=cfg.task, obs_mode=cfg.obs_mode)
    a1, a2 = cfg.alphas
    envs = make_train_envs(cfg.task, cfg.num_envs, obs_mode=cfg.obs_mode, shared_placement=cfg.shared_placement)
    extra = {"task": cfg.task, "method": cfg.method, "policy": cfg.policy, **cfg.extra}
    try:
        if cfg.method == "ppo":
            from tgrpo.baselines import PPOConfig, train_ppo

            ppo_cfg = PPOConfig(
                iterations=cfg.iterations,
                max_steps=cfg.max_steps,
                lr=cfg.lr,
                clip_eps=cfg.clip_eps,
                kl_beta=cfg.kl_beta,
                epochs=cfg.ppo_epochs,
                minibatch_size=cfg.minibatch_size,
                temperature=cfg.temperature,
                success_key=TRAIN_SUCCESS_KEY,
                seed=cfg.seed,
                output_dir=str(out_dir),
                progress_bar=cfg.progress,
                extra=extra,
            )
            say(f"ppo: Task{cfg.task}, M={cfg.num_envs}, {cfg.iterations} iterations of <= {cfg.max_steps} steps")
            result = train_ppo(envs, policy, config=ppo_cfg)
        else:
            tcfg = tgrpo.TGRPOConfig(
                alpha1=a1,
                alpha2=a2,
                iterations=cfg.iterations,
                max_steps=cfg.max_steps,
                rollout_mode=cfg.rollout_mode,
                success_key=TRAIN_SUCCESS_KEY,
                temperature=cfg.temperature,
                lr=cfg.lr,
                clip_eps=cfg.clip_eps,
                kl_beta=cfg.kl_beta,
                update_schedule=cfg.update_schedule,
                epochs=cfg.rl_epochs,
                minibatch_size=cfg.minibatch_size,
                seed=cfg.seed,
                output_dir=str(out_dir),
                resume=cfg.resume,
                log_formats=("jsonl", "csv"),
                progress_bar=cfg.progress,
                extra=extra,
            )
            say(
                f"{cfg.method}: Task{cfg.task}, alpha1={a1:g}, alpha2={a2:g}, M={cfg.num_envs}, "
                f"{cfg.iterations} iterations of <= {cfg.max_steps} steps"
            )
            result = tgrpo.train(envs, policy, tcfg)
    finally:
        envs.close()
    save_policy(result.policy, spec, out_dir / "policy.pt", stage=cfg.method, task=cfg.task, obs_mode=cfg.obs_mode,
                seed=cfg.seed, alphas=[a1, a2], iterations=cfg.iterations)
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
    say: Callable[[str], None] = _say,
    envs: Any = None,
) -> dict[str, Any]:
    """Evaluate a policy on benchmark states (one episode each); the result carries versions and seeds."""
    own = envs is None
    if own:
        envs = make_eval_envs(task, min(num_envs, len(states)), obs_mode=obs_mode, max_episode_steps=max_steps)
    try:
        res = evaluate_benchmark(envs, policy, list(states), max_steps=max_steps, temperature=temperature,
                                 seed=seed, progress=progress, log=say)
    finally:
        if own:
            envs.close()
    res.update(task=int(task), obs_mode=obs_mode, num_envs=int(envs.num_envs), versions=versions(),
               machine=machine(), date=now())
    return res


def before_after_table(rows: Sequence[tuple[str, dict[str, Any]]], task: int, paper: bool = True) -> str:
    """Markdown table of evaluation results (``rows`` = ``[(name, evaluation result), ...]``)."""
    lines = [
        "| policy | LIBERO success | placed | mean length | mean length (successes) | paper (OpenVLA-7B, LIBERO) |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in rows:
        s = res["summary"]
        key = {"SFT": "sft", "TGRPO": "tgrpo"}.get(name)
        ref = f"{PAPER_TABLE1[key][task]}%" if paper and key else "-"
        mls = "-" if s["mean_length_success"] is None else f"{s['mean_length_success']:.0f}"
        lines.append(
            f"| {name} | {_rate(s['success_rate'], s['successes'], s['episodes'])} | "
            f"{_rate(s.get('placed_rate'), s.get('placed'), s['episodes'])} | {s['mean_length']:.0f} | {mls} | {ref} |"
        )
    return "\n".join(lines)


def _rate(rate: float | None, count: int | None, episodes: int) -> str:
    """``"46% (23/50)"``, or ``"not measured"`` for evaluations made before the placed metric existed."""
    return "not measured" if rate is None else f"{100 * rate:.0f}% ({count}/{episodes})"


# ---------------------------------------------------------------------------------------------- main job
def run_main_job(cfg: PipelineConfig, record: bool | str = False, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Demonstrations -> SFT -> evaluation -> TGRPO -> evaluation; prints and writes the before/after table.

    Writes under ``cfg.output_dir``: ``config.json``, ``sft/`` (policy, SFT metrics), ``eval_sft.json``,
    ``tgrpo/`` (metrics.jsonl, checkpoint, policy, training_curve.png), ``eval_tgrpo.json``,
    ``training_curve.png`` (training curve and the before/after success), ``rollout_tgrpo.mp4``, ``results.md`` and ``summary.json`` (versions, seeds,
    timings). With ``record=True`` also ``benchmarks/results/main_job.{json,md,png}`` (a string: that
    name instead of ``main_job``; see :func:`record_run`).

    Returns:
        The summary dict.
    """
    torch.set_num_threads(1)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", cfg.to_dict())
    timings: dict[str, float] = {}
    t_job = time.perf_counter()
    task = get_task(cfg.task)
    say(f"main job: Task{task.task_id} ({task.instruction!r}), policy {cfg.policy}, seed {cfg.seed}, "
        f"output {out}{' (resuming)' if cfg.resume else ''}")

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - t0, 2)
        say(f"stage {name}: {timings[name]:.1f}s")
        return value

    # 1. demonstrations
    demos, demos_path = timed("demos", lambda: run_demos(cfg, say))

    # 2. SFT
    sft_dir = out / "sft"

    def do_sft() -> tuple[Any, dict[str, Any]]:
        if cfg.resume and (sft_dir / "policy.pt").is_file():
            policy, spec, _ = load_policy(sft_dir / "policy.pt")
            say(f"sft: reusing {sft_dir / 'policy.pt'}")
            return policy, spec
        policy, spec, _ = run_sft(cfg, demos, sft_dir, say)
        return policy, spec

    policy, spec = timed("sft", do_sft)

    # 3. evaluation of the SFT policy
    eval_kw = dict(obs_mode=cfg.obs_mode, states=cfg.eval_states, num_envs=cfg.eval_envs,
                   max_steps=cfg.eval_max_steps, temperature=cfg.eval_temperature, seed=cfg.seed,
                   progress=cfg.progress, say=say)
    eval_envs: list[Any] = []

    def shared_eval_envs() -> Any:
        if not eval_envs:
            eval_envs.append(make_eval_envs(cfg.task, min(cfg.eval_envs, len(cfg.eval_states)),
                                            obs_mode=cfg.obs_mode, max_episode_steps=cfg.eval_max_steps))
        return eval_envs[0]

    def cached_eval(name: str, pol: Any) -> dict[str, Any]:
        path = out / f"eval_{name}.json"
        if cfg.resume and path.is_file():
            say(f"eval {name}: reusing {path}")
            return json.loads(path.read_text())
        res = run_eval(pol, cfg.task, envs=shared_eval_envs(), **eval_kw)
        res["policy"] = name
        _write_json(path, res)
        return res

    try:
        eval_sft = timed("eval_sft", lambda: cached_eval("sft", policy))

        # 4. TGRPO on training placements
        if eval_envs:  # free the cores for the training group
            eval_envs.pop().close()
        result = timed("tgrpo", lambda: run_train(cfg, policy, spec, out / cfg.method, say))
        policy = result.policy

        # 5. evaluation of the TGRPO policy
        eval_rl = timed("eval_tgrpo", lambda: cached_eval(cfg.method, policy))
    finally:
        for e in eval_envs:
            e.close()

    # 6. plot and video
    name = _LABELS[cfg.method]
    paper_key = {"tgrpo": "tgrpo", "step_only": "step_only", "traj_only": "traj_only"}.get(cfg.method)
    rows = result.history
    if rows and plot_main_job(
        rows,
        [("SFT", eval_sft["summary"]["success_rate"], eval_sft["summary"].get("placed_rate"),
          PAPER_TABLE1["sft"][cfg.task]),
         (name, eval_rl["summary"]["success_rate"], eval_rl["summary"].get("placed_rate"),
          PAPER_TABLE1[paper_key][cfg.task] if paper_key else None)],
        out / "training_curve.png",
        title=f"LiberoObject-Task{cfg.task}, {cfg.policy} policy, seed {cfg.seed}: SFT then {name}",
    ):
        say(f"training curve: {out / 'training_curve.png'}")
    video: dict[str, Any] | None = None
    if cfg.video:
        vpath = out / f"rollout_{cfg.method}.mp4"
        state = cfg.video_state
        if state is None:  # the first benchmark state the final policy solved, else the first state
            solved = [e["init_state"] for e in eval_rl["episodes"] if e["success"]]
            state = solved[0] if solved else cfg.eval_states[0]

        def do_video() -> dict[str, Any]:
            if cfg.resume and vpath.is_file() and (out / "video.json").is_file():
                return json.loads((out / "video.json").read_text())
            v = record_video(policy, cfg.task, vpath, init_state=state, obs_mode=cfg.obs_mode,
                             max_steps=cfg.eval_max_steps, temperature=cfg.eval_temperature, seed=cfg.seed)
            _write_json(out / "video.json", v)
            return v

        video = timed("video", do_video)
        say(f"video: {vpath} (benchmark state {video['init_state']}, LIBERO success={video['success']}, "
            f"placed={video.get('placed')}, {video['length']} steps)")
    timings["total"] = round(time.perf_counter() - t_job, 2)

    # 7. summary and table
    before, after = eval_sft["summary"]["success_rate"], eval_rl["summary"]["success_rate"]
    delta = 100 * (after - before)
    summary = {
        "task": cfg.task,
        "instruction": task.instruction,
        "policy": cfg.policy,
        "method": cfg.method,
        "seed": cfg.seed,
        "alphas": list(cfg.alphas),
        "success_rate": {"sft": before, cfg.method: after},
        "improvement_points": delta,
        "placed_rate": {"sft": eval_sft["summary"].get("placed_rate"), cfg.method: eval_rl["summary"].get("placed_rate")},
        "eval": {"sft": eval_sft["summary"], cfg.method: eval_rl["summary"]},
        "eval_protocol": {
            "states": list(cfg.eval_states),
            "max_steps": cfg.eval_max_steps,
            "warmup_steps": 10,
            "temperature": cfg.eval_temperature,
            "decoding": "greedy (argmax token)" if cfg.eval_temperature == 0 else "sampled",
        },
        "demos": {"path": str(demos_path), "episodes": demos.num_episodes, "steps": demos.num_steps,
                  **{k: demos.meta.get(k) for k in ("seed", "noise", "expert_version", "format_version")}},
        "train": {"iterations": cfg.iterations, "num_envs": cfg.num_envs, "max_steps": cfg.max_steps,
                  "env_steps": (result.history[-1].get("charts/env_steps") if result.history else None)},
        "timings_s": timings,
        "video": video,
        "config": cfg.to_dict(),
        "versions": versions(),
        "machine": machine(),
        "date": now(),
    }
    _write_json(out / "summary.json", summary)
    (out / "results.md").write_text(_results_markdown(cfg, summary))
    table, verdict = _table_and_verdict(cfg, summary)
    print("\n" + table + "\n\n" + verdict + "\n" + _timings_line(timings), flush=True)
    if record:
        record_run(out, "main_job" if record is True else str(record), say=say)
    return summary


def record_run(out_dir: str | os.PathLike, name: str = "main_job", say: Callable[[str], None] = _say) -> Path:
    """Copy a finished run's results to ``benchmarks/results/<name>.{json,md,png,mp4}``.

    Args:
        out_dir: the run's ``output_dir`` (it holds ``summary.json`` and ``training_curve.png``).
        name: base name of the files; letters, digits, ``_`` and ``-`` only.

    Raises:
        ValueError: on a bad name. FileNotFoundError: if the run has no ``summary.json``.
    """
    from libero_tgrpo.paths import results_dir

    if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ValueError(f"record name {name!r} is not accepted: use letters, digits, '_' and '-' only.")
    out = Path(out_dir)
    if not (out / "summary.json").is_file():
        raise FileNotFoundError(f"{out / 'summary.json'} does not exist: run the job to the end first.")
    summary = json.loads((out / "summary.json").read_text())
    fields = {f.name for f in dataclasses.fields(PipelineConfig)}
    cfg = PipelineConfig(**{k: v for k, v in summary["config"].items() if k in fields})
    rdir = results_dir()
    _write_json(rdir / f"{name}.json", summary)
    md = _results_markdown(cfg, summary).replace("(training_curve.png)", f"({name}.png)")
    if (out / "training_curve.png").is_file():
        shutil.copyfile(out / "training_curve.png", rdir / f"{name}.png")
    video = summary.get("video") or {}
    if video.get("path") and Path(video["path"]).is_file():
        shutil.copyfile(video["path"], rdir / f"{name}.mp4")
        md = md.replace(Path(video["path"]).name, f"{name}.mp4")
    (rdir / f"{name}.md").write_text(md)
    say(f"recorded to {rdir / (name + '.md')}")
    return rdir / f"{name}.md"


def _table_and_verdict(cfg: PipelineConfig, summary: dict[str, Any]) -> tuple[str, str]:
    """The before/after table and the one-line verdict of a run, from its summary."""
    name = _LABELS[cfg.method]
    ev = summary["eval"]
    table = before_after_table([("SFT", {"summary": ev["sft"]}), (name, {"summary": ev[cfg.method]})], cfg.task)
    before, after = summary["success_rate"]["sft"], summary["success_rate"][cfg.method]
    verdict = (
        f"{name} changed LIBERO's success rate by {100 * (after - before):+.0f} points "
        f"({100 * before:.0f}% -> {100 * after:.0f}%)"
    )
    placed = summary.get("placed_rate") or {}
    p_before, p_after = placed.get("sft"), placed.get(cfg.method)
    if p_before is not None and p_after is not None:
        verdict += (
            f" and the placed rate by {100 * (p_after - p_before):+.0f} points "
            f"({100 * p_before:.0f}% -> {100 * p_after:.0f}%)"
        )
    verdict += f" on {len(cfg.eval_states)} benchmark states of Task{cfg.task}."
    return table, verdict


_FLAG_NAMES = {"eval_states": "--states", "demos_path": "--demos"}
_FLAG_SWITCHES = {("normalize_alphas", False): "--raw-alphas", ("shared_placement", False): "--independent-placements",
                  ("video", False): "--no-video", ("progress", False): "--quiet", ("resume", True): "--resume"}


def command_line(cfg: PipelineConfig) -> str:
    """The ``libero-tgrpo run`` command that gives ``cfg``: the options that differ from the defaults."""
    default = PipelineConfig()
    parts = ["libero-tgrpo run"]
    for f in dataclasses.fields(PipelineConfig):
        value, base = getattr(cfg, f.name), getattr(default, f.name)
        if value == base or f.name == "extra":
            continue
        if (f.name, value) in _FLAG_SWITCHES:
            parts.append(_FLAG_SWITCHES[(f.name, value)])
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
            if f.name == "eval_states" and value == ",".join(map(str, range(NUM_INIT_STATES))):
                continue
        parts.append(f"{_FLAG_NAMES.get(f.name, '--' + f.name.replace('_', '-'))} {value}")
    return " ".join(parts)


def _timings_line(timings: dict[str, float]) -> str:
    return "timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items())


def _results_markdown(cfg: PipelineConfig, summary: dict[str, Any]) -> str:
    v = summary["versions"]
    m = summary["machine"]
    cmd = command_line(cfg)
    table, verdict = _table_and_verdict(cfg, summary)
    video = summary.get("video") or {}
    video_line = (
        [f"Rollout video of the final policy (greedy, benchmark state {video.get('init_state')}, "
         f"{'LIBERO success' if video.get('success') else 'LIBERO failure'}"
         f"{'' if video.get('placed') is None else (', placed' if video['placed'] else ', not placed')} in "
         f"{video.get('length')} steps): "
         f"[{Path(video['path']).name}]({Path(video['path']).name})", ""]
        if video.get("path") else []
    )
    return "\n".join(
        [
            f"# SFT vs {_LABELS[cfg.method]} on LiberoObject-Task{cfg.task}, {cfg.policy} policy",
            "",
            f"Command: `{cmd}` (task {cfg.task}, policy {cfg.policy}, seed {cfg.seed}, "
            f"alpha1={cfg.alphas[0]:g}, alpha2={cfg.alphas[1]:g}).",
            "",
            table,
            "",
            verdict,
            "",
            f"Evaluation: {len(cfg.eval_states)} benchmark initial states, one episode each, at most "
            f"{cfg.eval_max_steps} steps after 10 warm-up steps, "
            + ("greedy decoding. " if cfg.eval_temperature == 0 else f"sampling at temperature {cfg.eval_temperature}. ")
            + "LIBERO success: LIBERO's predicate (comparable with published numbers). Placed: LIBERO success, "
            "then the gripper opened and the arm held still for 20 steps, after which the object is still in the "
            "basket, untouched, and the basket undisturbed. Training episodes end on placement, and the staged "
            "reward's top stage needs it.",
            f"SFT: {summary['demos']['episodes']} expert demonstrations ({summary['demos']['steps']} steps), "
            f"{cfg.sft_epochs} epochs, hidden {list(cfg.hidden)}. RL: {cfg.iterations} iterations, groups of "
            f"M={cfg.num_envs}, <= {cfg.max_steps} steps, lr {cfg.lr}, temperature {cfg.temperature}, "
            f"KL beta {cfg.kl_beta}, {cfg.update_schedule} updates.",
            "",
            _timings_line(summary["timings_s"]),
            "",
            f"Machine: {m.get('cpu_model', '?')} ({m.get('cpu_count')} cores). Versions: "
            + ", ".join(f"{k} {val}" for k, val in v.items()),
            "",
            "![training curve](training_curve.png)",
            "",
            *video_line,
        ]
    )
