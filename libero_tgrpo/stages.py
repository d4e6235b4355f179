"""The stages of the pipeline, each usable on its own, and the run directory that times and caches them.

demonstrations (:func:`run_demos`) -> SFT (:func:`run_sft`) -> RL (:func:`run_train`) -> evaluation
(:func:`run_eval`). :class:`RunDir` runs a stage timed and, when resuming, reads a finished stage's result back
from disk instead of running it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from libero_gym import MAX_EPISODE_STEPS, NUM_INIT_STATES
from libero_tgrpo.config import PipelineConfig
from libero_tgrpo.demos import DemoSet, get_demos, read_demos, select_observations
from libero_tgrpo.envs import env_id, make_eval_envs, make_train_envs
from libero_tgrpo.evaluation import evaluate_benchmark
from libero_tgrpo.files import LOCK_NAME, DirLock, RunDirError, check_writable, write_json, write_text
from libero_tgrpo.options import command_line, save_config
from libero_tgrpo.policies import POLICY_KINDS, build_policy, save_policy
from libero_tgrpo.progress import say as _default_say
from libero_tgrpo.versions import machine, now, versions

__all__ = ["RunDir", "RunDirError", "run_identity", "file_digest", "RUN_RECORD", "NOT_IDENTITY", "SharedEvalEnvs",
           "observation_space", "eval_config_kwargs", "run_demos", "run_sft", "run_train", "run_eval",
           "save_final_policy"]

T = TypeVar("T")
Say = Callable[[str], None]


RUN_RECORD = "run.json"
"""The file of a run directory that names its run: the command, the identity (the options and file digests that
decide its results) and when it was started."""

NOT_IDENTITY = frozenset({"output_dir", "resume", "resume_or_start", "overwrite", "progress", "video",
                          "vectorization", "ray_address", "rl.iterations", "demos.demo_cache", "demos.workers",
                          "video_interval", "snapshot_interval", "rl.log_formats"})
"""Options that may change when a run is resumed: where and how it runs (local or Ray envs, the cluster), how long
RL goes on and what it logs on the way (sinks, videos, snapshots), not what it computes (the demonstrations'
content is compared by its digest, not by where the cache lies)."""

_LEGACY_MARKERS = ("config.json", "command.txt", "checkpoint.pt", "metrics.jsonl", "metrics.csv", "policy.pt",
                   "eval.json", "summary.json")
"""Files by which a run directory of an earlier version (no ``run.json``) is recognised."""


def run_identity(cfg: PipelineConfig, visible: frozenset[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The values that decide a run's results, flat (``"rl.lr"``): every option of ``cfg`` (those of
    ``visible`` for a subcommand that offers only some) except :data:`NOT_IDENTITY`, the resolved alphas, and
    ``extra`` (e.g. the command's own arguments)."""
    from libero_tgrpo.options import options_dict

    flat: dict[str, Any] = {}
    for key, value in options_dict(cfg).items():
        if visible is not None and key not in visible:
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    if visible is None or "method" in visible:
        flat["alphas"] = list(cfg.alphas)
    flat.update(extra)
    return {k: v for k, v in json.loads(json.dumps(flat, default=str)).items() if k not in NOT_IDENTITY}


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's content; of a directory (a LeRobotDataset), of its files' relative paths and
    contents in sorted order."""
    root = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
    for file in files:
        if root.is_dir():
            h.update(file.relative_to(root).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest()


class RunDir:
    """The output directory of one run: every stage's result lands here, timed; ``resume`` reuses finished ones.

    A directory belongs to one run. Opening it takes an exclusive lock (:class:`~libero_tgrpo.files.DirLock`:
    a second writer is refused at once, naming the holder's pid; the OS frees the lock when the process dies)
    and then:

    * a new run refuses a directory that holds another run, unless ``overwrite`` (which first removes every
      file of the old run) or ``resume``;
    * ``resume`` continues the run there when its recorded identity (:func:`run_identity`, plus the digests
      given to :meth:`check_digest`) equals this one, and refuses naming every field that differs, with its
      old and new values; with nothing to resume it is an error unless ``start_if_missing``.

    The record is ``run.json``. Use it as a context manager (or call :meth:`close`) to release the lock.

    Args:
        root: the directory (created).
        resume: continue the run in the directory, reusing the results of stages that are already on disk.
        say: where progress lines go.
        command: the command that writes the directory (``run``, ``sft``, ``train``, ``eval``).
        identity: the values that decide the run's results (:func:`run_identity`).
        overwrite: remove the run the directory holds and start a new one.
        start_if_missing: with ``resume``, start a new run when the directory holds none.
        inputs: files or directories the run reads; ``overwrite`` refuses to remove a directory that holds one.

    Raises:
        RunDirError: the directory holds another run (or one that does not match, or nothing to resume).
        DirLockedError: another process writes the directory.
        OSError: the directory cannot be written.
    """

    def __init__(
        self,
        root: str | Path,
        resume: bool = False,
        say: Say = _default_say,
        *,
        command: str = "run",
        identity: dict[str, Any] | None = None,
        overwrite: bool = False,
        start_if_missing: bool = False,
        inputs: Sequence[str | Path] = (),
    ) -> None:
        if resume and overwrite:
            raise RunDirError("resume and overwrite exclude each other: give one of --resume and --overwrite.")
        self.root = Path(root)
        self.say = say
        self.command = command
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._inputs = [Path(p) for p in inputs]
        check_writable(self.root)
        self._lock = DirLock(self.root).acquire()
        try:
            self.resume = self._claim(dict(identity or {}), resume, overwrite, start_if_missing)
        except BaseException:
            self._lock.release()
            raise

    # ---------------------------------------------------------------------------------------- ownership
    def _holds_run(self) -> bool:
        """Whether the directory holds a run: a record with results beside it (a record alone is a run that
        failed before it wrote anything), or the files of an earlier version's run."""
        if (self.root / RUN_RECORD).is_file():
            return any(p.name not in (RUN_RECORD, LOCK_NAME) for p in self.root.iterdir())
        return any((self.root / m).exists() for m in _LEGACY_MARKERS)

    def _claim(self, identity: dict[str, Any], resume: bool, overwrite: bool, start_if_missing: bool) -> bool:
        record_path = self.root / RUN_RECORD
        holds = self._holds_run()
        if resume and holds:
            record = json.loads(record_path.read_text()) if record_path.is_file() else None
            if record is None:
                self.say(f"{self.root} was written by an earlier version without {RUN_RECORD}: resuming without "
                         "checking that its options match")
                self.record = {"command": self.command, "identity": identity, "digests": {}, "started": now()}
            else:
                self._check_same_run(record, identity)
                self.record = record
            self._write_record()
            return True
        if resume and not start_if_missing:
            raise RunDirError(
                f"nothing to resume in {str(self.root)!r}: it holds no run. Run without --resume to start one, "
                "or give --resume-or-start to resume a run if there is one and start one otherwise."
            )
        if holds:
            if not overwrite:
                raise RunDirError(
                    f"{str(self.root)!r} holds another run. Give --resume to continue it, --overwrite to remove it "
                    "and start a new one, or another --output-dir."
                )
            self._remove_old_run()
        self.record = {"command": self.command, "identity": identity, "digests": {}, "started": now()}
        self._write_record()
        return False

    def _check_same_run(self, record: dict[str, Any], identity: dict[str, Any]) -> None:
        old_command = record.get("command")
        diffs = [] if old_command == self.command else [f"command: {old_command} -> {self.command}"]
        old = record.get("identity", {})
        for key in sorted(set(old) | set(identity), key=lambda k: (k.count("."), k)):
            if key in NOT_IDENTITY:
                continue
            a, b = old.get(key, "(not set)"), identity.get(key, "(not set)")
            if a != b:
                diffs.append(f"{key}: {a!r} -> {b!r}")
        if diffs:
            raise RunDirError(
                f"cannot resume the run in {str(self.root)!r} with other settings ({'; '.join(diffs)}). Resume "
                "with the run's own options (its config.yaml / command.txt), or give --overwrite or another "
                "--output-dir for a new run."
            )

    def _remove_old_run(self) -> None:
        root = self.root.resolve()
        for p in self._inputs:
            if p.resolve() == root or root in p.resolve().parents:
                raise RunDirError(f"--overwrite would remove {str(p)!r}, an input of this run, with the old run in "
                                  f"{str(self.root)!r}: give another --output-dir.")
        self.say(f"--overwrite: removing the run in {self.root}")
        for entry in self.root.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def _write_record(self) -> None:
        write_json(self.root / RUN_RECORD, self.record)

    def check_digest(self, name: str, path: str | Path) -> str:
        """Record the digest of an input or intermediate file (``"demos"``, ``"sft"``) in ``run.json``; on a
        resume, compare it with the recorded one.

        Raises:
            RunDirError: the file differs from the one the resumed run used.
        """
        digest = file_digest(path)
        digests = self.record.setdefault("digests", {})
        old = digests.get(name)
        if self.resume and old is not None and old != digest:
            raise RunDirError(
                f"cannot resume the run in {str(self.root)!r}: its {name} file differs from the one the run used "
                f"({name} digest: {old} -> {digest}, {path}). Give --overwrite or another --output-dir for a new run."
            )
        if old != digest:
            digests[name] = digest
            self._write_record()
        return digest

    def close(self) -> None:
        """Release the directory's lock."""
        self._lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- stages
    def elapsed(self) -> float:
        """Seconds since the run directory was opened (rounded to 10 ms)."""
        return round(time.perf_counter() - self._t0, 2)

    def write_config(self, cfg: PipelineConfig, command: str = "run") -> None:
        """Record the run's resolved config: ``config.json`` (every value, with the resolved alphas),
        ``config.yaml`` (read back by ``--config``) and ``command.txt`` (the command line that gives it)."""
        write_json(self.root / "config.json", cfg.to_dict())
        save_config(cfg, self.root / "config.yaml", command)
        write_text(self.root / "command.txt", command_line(cfg, command) + "\n")

    def stage(
        self,
        name: str,
        compute: Callable[[], T],
        *,
        done: Sequence[str | Path] = (),
        load: Callable[[], T] | None = None,
        save: Callable[[T], Any] | None = None,
    ) -> T:
        """Run one stage, timed (``timings[name]``).

        Args:
            name: the stage's name in the timings and the log.
            compute: runs the stage and returns its result.
            done: files (relative to the run directory) that hold a finished result; with ``resume`` and all of
                them on disk, ``load()`` gives the result instead of ``compute()``.
            load: reads the finished result back.
            save: writes the result after ``compute()``.
        """
        t0 = time.perf_counter()
        paths = [self.root / p for p in done]
        if self.resume and load is not None and paths and all(p.is_file() for p in paths):
            self.say(f"{name}: reusing {paths[0]}")
            value = load()
        else:
            value = compute()
            if save is not None:
                save(value)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.say(f"stage {name}: {self.timings[name]:.1f}s")
        return value

    def json_stage(self, name: str, filename: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """A stage whose result is one JSON file ``filename`` in the run directory."""
        path = self.root / filename
        return self.stage(name, compute, done=[filename], load=lambda: json.loads(path.read_text()),
                          save=lambda value: write_json(path, value))


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
    ``video_interval``; see :mod:`libero_tgrpo.hooks`).

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
    envs = make_train_envs(cfg.task, cfg.num_envs, obs_mode=cfg.obs_mode, shared_placement=cfg.shared_placement,
                           **cfg.env_backend, **cfg.env_kwargs())
    try:
        if cfg.method == "ppo":
            from tgrpo.baselines import train_ppo

            say(f"ppo: Task{cfg.task}, M={cfg.num_envs}, {rl_cfg.iterations} iterations of <= {rl_cfg.max_steps} "
                "steps")
            if cfg.video_interval or cfg.snapshot_interval:
                say("ppo: no periodic videos or snapshots (the PPO baseline has no iteration hook)")
            result = train_ppo(envs, policy, config=rl_cfg)
        else:
            say(f"{cfg.method}: Task{cfg.task}, alpha1={a1:g}, alpha2={a2:g}, M={cfg.num_envs}, "
                f"{rl_cfg.iterations} iterations of <= {rl_cfg.max_steps} steps")
            hook, every = training_hook(cfg, envs, spec, out_dir, say)
            if hook is not None:
                rl_cfg = dataclasses.replace(rl_cfg, eval_interval=every)
            result = tgrpo.train(envs, policy, rl_cfg, eval_fn=hook)
    finally:
        envs.close()
    save_final_policy(result.policy, spec, out_dir, stage=cfg.method, task=cfg.task, obs_mode=cfg.obs_mode,
                      seed=cfg.seed, alphas=[a1, a2], iterations=rl_cfg.iterations)
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
