"""The pipeline's options: one typed source, composed from the configs of the stages and packages.

:class:`PipelineConfig` holds what is the pipeline's own (task, policy, seed, output directory, which RL
method and α) and composes the configs of the stages instead of copying their fields:

=================  =================================================  =========================================
field              type                                               stage
=================  =================================================  =========================================
``demos``          :class:`DemoConfig`                                demonstrations of the scripted expert
``sft``            :class:`SFTConfig`                               behaviour cloning
``rl``             :class:`tgrpo.TGRPOConfig`                         TGRPO (and the options PPO shares with it)
``ppo``            :class:`tgrpo.baselines.PPOConfig`                 PPO's own options (epochs, GAE)
``eval``           :class:`EvalConfig`                                evaluation on the benchmark states
``hf``             :class:`HFConfig`                                  loading a Hugging Face VLA (``--policy PATH``)
=================  =================================================  =========================================

The stage configs are defined in :mod:`libero_tgrpo.stage_configs` and importable from here too. Every value
is checked when the config is built (each part in its own ``__post_init__``, the combination here), so a bad
value fails before any work starts. The command line and the YAML config files are derived
from these dataclasses (:mod:`libero_tgrpo.options`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from libero_gym import NUM_INIT_STATES, get_task
from libero_tgrpo.envs import TRAIN_SUCCESS_KEY
from libero_tgrpo.paper import paper_alphas
from libero_tgrpo.parsing import parse_hidden, parse_task
from libero_tgrpo.stage_configs import DemoConfig, EvalConfig, HFConfig, SFTConfig
from libero_tgrpo.stage_configs import is_int as _is_int
from libero_tgrpo.stage_configs import require as _require
from tgrpo.config import ConfigError, PPOConfig, RLConfig, TGRPOConfig, check_alpha

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "DemoConfig",
    "SFTConfig",
    "EvalConfig",
    "HFConfig",
    "PipelineConfig",
    "HELDOUT_ALPHAS",
    "default_alphas",
    "method_alphas",
]

METHODS = ("tgrpo", "step_only", "traj_only", "ppo")
"""RL methods: TGRPO (eq. 8 with both terms), its two ablations, and PPO with a learned value head."""

METHOD_LABELS = {"sft": "SFT", "tgrpo": "TGRPO", "step_only": "step-only", "traj_only": "trajectory-only",
                 "ppo": "PPO"}
"""How results name each method (and the SFT baseline)."""

Method = Literal["tgrpo", "step_only", "traj_only", "ppo"]
Vectorization = Literal["async", "ray"]
Select = Literal["final", "heldout"]


def _default_sft() -> SFTConfig:
    return SFTConfig(epochs=100, lr=3e-3, batch_size=128)


def _default_rl() -> TGRPOConfig:
    """The main job's RL settings: lr 3e-5, KL beta 0.04, temperature 1, per-step updates. Chosen by the held-out
    sweep (``python -m benchmarks.tuning_sweep run``: Tasks 2, 4 and 10, seeds 0-2, 30 seeded training placements,
    never the benchmark states): placed 80.0% averaged over the tasks against 65.6% for lr 1e-4, which fell below
    its SFT policy on all three Task2 seeds (-42 points on average, KL to SFT up to 78);
    benchmarks/results/tuning_sweep.md."""
    return TGRPOConfig(lr=3e-5, log_formats=("jsonl", "csv", "tensorboard"), success_key=TRAIN_SUCCESS_KEY)


# ---------------------------------------------------------------------------------------------- alphas
HELDOUT_ALPHAS: dict[int, tuple[float, float]] = {1: (0.2, 0.8), 2: (0.2, 0.8), 7: (0.2, 0.8)}
"""Tasks whose default ``(alpha1, alpha2)`` was chosen on held-out training placements instead of taken from the
paper (30 placements from placement seeds 8,000,000 + j, seeds 0-2, the main job's SFT and RL settings; placed rate,
mean over seeds). Task2: the paper's 1 : 0.1 ((0.91, 0.09) normalised) left TGRPO nearly step-only and flat, held-out
placed -1.1 points from its SFT policy (2 of 3 seeds below), against +18.9 for (0.2, 0.8), +11.1 for (0.5, 0.5)
and +11.1 for (0, 1), none below (``python -m benchmarks.tuning_sweep run --tasks 2 --lrs 3e-5 --alphas
paper,0.5:0.5,0.2:0.8,0:1``; ``benchmarks/results/alpha_task2/``). Tasks 1 and 7 share Task2's step-heavy 10 : 1
pair: (0.2, 0.8) 94.4 against 83.3 on Task1 (the paper's pair 53 against 90 on seed 2) and 98.9 against 95.6 on
Task7 (``--tasks 1`` / ``--tasks 7 --alphas paper,0.2:0.8``; ``benchmarks/results/alpha_task1_task7/``). The other
tasks keep the paper's pair. Task3's (10 : 5) was ahead of (0.2, 0.8) on the same study, 98.9 against 92.2
(``benchmarks/results/alpha_task3/``); Task8 (10 : 1) was not studied."""


def default_alphas(task: int) -> tuple[float, float]:
    """``(alpha1, alpha2)`` of a run on ``task`` that gives none: :data:`HELDOUT_ALPHAS` where the task has a pair
    there, else the paper's (``libero_tgrpo.PAPER_ALPHAS``)."""
    return HELDOUT_ALPHAS.get(task) or paper_alphas(task)


def method_alphas(
    method: str,
    task: int,
    alpha1: float | None = None,
    alpha2: float | None = None,
    normalize: bool = True,
) -> tuple[float, float]:
    """``(alpha1, alpha2)`` of a method on a task: :func:`default_alphas` (the paper's per-task values, or the
    held-out choice of :data:`HELDOUT_ALPHAS`) unless given.

    With ``normalize`` (the default) the pair is divided by ``alpha1 + alpha2``: the paper's *ratio* is
    kept and the fused advantage has the same scale on every task. The paper's raw pairs differ in scale by
    up to 15x (Task3: 10 and 5; Task4: 0.35 and 0.65), and with one learning rate and KL weight for all tasks
    the large pairs overpower the KL penalty: with the raw pair (10, 1), TGRPO on Task1 drifted to a
    reference KL of about 9 and fell from 28% (SFT) to 0% (``docs/pipeline.md``). Pairs that already sum to
    1 (Tasks 4, 5, 6, 9 and 10) are unchanged.

    ``step_only`` sets ``alpha2 = 0`` and ``traj_only`` sets ``alpha1 = 0`` *before* the normalisation, so the
    ablations are ``(1, 0)`` and ``(0, 1)``: the remaining advantage has the same unit weight as TGRPO's pair,
    and every method faces the same effective KL weight, learning rate and schedule. (Zeroing after the
    normalisation left e.g. trajectory-only on Task2 with alpha2 = 0.091 and step-only on Task10 with
    alpha1 = 0.3, each against a different effective KL strength.) Without ``normalize`` the ablations keep
    the other raw weight, as in the paper. PPO does not use them.

    Raises:
        ValueError: for an unknown method, a negative weight, or two zero weights.
    """
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is not accepted: choose one of {', '.join(METHODS)}.")
    p1, p2 = default_alphas(task)
    a1 = p1 if alpha1 is None else check_alpha(alpha1, "alpha1")
    a2 = p2 if alpha2 is None else check_alpha(alpha2, "alpha2")
    if a1 + a2 <= 0:
        raise ConfigError(
            f"alpha1={a1!r} and alpha2={a2!r} are not accepted: at least one must be > 0 (with both 0 the "
            "advantage is 0 and the policy does not learn); use --method step_only or traj_only for ablations."
        )
    if method == "step_only":
        a2 = 0.0
    elif method == "traj_only":
        a1 = 0.0
    if a1 + a2 <= 0:
        raise ConfigError(
            f"method={method!r} keeps only a weight that is 0 (alpha1={a1!r}, alpha2={a2!r}): give that "
            f"advantage a weight > 0 or choose another method."
        )
    if normalize:
        total = a1 + a2
        a1, a2 = a1 / total, a2 / total
    return a1, a2


# ---------------------------------------------------------------------------------------------- pipeline
@dataclass
class PipelineConfig:
    """Every option of the pipeline; the defaults are the main job's built-in settings (Task4, state policy).

    The SFT stage is deliberately modest (few demonstrations, a small network, few epochs) so that the
    supervised policy leaves room for reinforcement learning, as the paper's SFT baselines do.
    """

    task: int = 4
    """LIBERO-Object task: 1-10, Task4 or LiberoObject-Task4-v0 (paper numbering; 4 is the bbq sauce)."""
    policy: str = "state"
    """'state' (built-in MLP), 'vision' (cameras + instruction + state) or a Hugging Face model directory /
    Hub id."""
    seed: int = 0
    """Seed of everything the run does: demonstrations (unless demo_seed), initialisation, SFT, RL, evaluation."""
    output_dir: str = "outputs/main"
    """Where every result of the run goes."""
    resume: bool = False
    """Continue a killed run: skip the stages whose results are in the output directory, continue RL from its
    checkpoint. Refused when the directory holds no run, or a run with other options."""
    resume_or_start: bool = False
    """Resume the run in the output directory if there is one, else start one."""
    overwrite: bool = False
    """Remove the run that the output directory holds (all its files) and start a new one."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden layer widths of the state or vision policy."""
    method: Method = "tgrpo"
    """TGRPO, its ablations (step_only: alpha2=0, traj_only: alpha1=0) or PPO."""
    alpha1: float | None = None
    """Weight of the step advantage (None: the task's default, the paper's (libero_tgrpo.PAPER_ALPHAS) except where
    held-out tuning chose another pair (HELDOUT_ALPHAS: Task2 0.2/0.8))."""
    alpha2: float | None = None
    """Weight of the trajectory advantage (None: the task's default, as alpha1)."""
    normalize_alphas: bool = True
    """Divide (alpha1, alpha2) by their sum, keeping their ratio (see method_alphas); off: use them as given."""
    num_envs: int = 8
    """Group size M: parallel envs per RL group (>= 2)."""
    shared_placement: bool = True
    """All envs of a group start from one training placement (off: each env gets its own)."""
    vectorization: Vectorization = "async"
    """How the training and evaluation envs run: 'async' (one process per env on this machine) or 'ray' (one
    Ray actor per env, anywhere on a Ray cluster; the 'ray' extra). Results are the same."""
    ray_address: str | None = None
    """With vectorization 'ray': the cluster to join ('auto', 'ray://head:10001'); None starts a local Ray."""
    video: bool = True
    """Write a rollout video of the final policy."""
    video_state: int | None = None
    """Benchmark state of the rollout video; None: the first state the final policy solved in the evaluation
    (the first evaluated state if it solved none)."""
    video_interval: int = 0
    """Every this many RL iterations, roll the policy out from a benchmark state (video_state, else 0), write
    videos/iter_NNNN.mp4 and log it to TensorBoard and W&B (0: off; software rendering is slow: a 280-step video
    took 34-43 s on 2 busy CPU cores)."""
    snapshot_interval: int = 10
    """Every this many RL iterations, write the built-in policy as snapshots/iter_NNNN.safetensors + .json
    (0: off; TGRPO methods; the final policy.safetensors is always written)."""
    select: Select = "final"
    """Which policy of the RL run is its result: 'final' (the last one) or 'heldout' (the best of the start and
    select_points evenly spaced points of training on select_placements held-out training placements, never on
    the benchmark states; see libero_tgrpo.selection). Built-in policies."""
    select_placements: int = 30
    """Held-out training placements that score each candidate with select 'heldout'."""
    select_points: int = 3
    """Candidates during training with select 'heldout' (the last is the final policy), besides the start."""
    progress: bool = True
    """Progress bars and per-iteration log lines."""
    demos: DemoConfig = field(default_factory=DemoConfig)
    """Demonstrations."""
    sft: SFTConfig = field(default_factory=_default_sft)
    """Behaviour cloning (its seed is the run's)."""
    rl: TGRPOConfig = field(default_factory=_default_rl)
    """TGRPO and the options PPO shares with it (the run sets alpha1/alpha2, seed, output_dir, resume)."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """PPO's own options (the shared ones are rl's)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation on the benchmark states."""
    hf: HFConfig = field(default_factory=HFConfig)
    """Loading and training a Hugging Face VLA (when policy is a model directory or Hub id)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values recorded with the run."""

    def __post_init__(self) -> None:
        self.task = get_task(parse_task(self.task) if isinstance(self.task, str) else self.task).task_id
        _require(self.method in METHODS,
                 f"method={self.method!r} is not accepted: choose one of {', '.join(METHODS)}.")
        _require(_is_int(self.num_envs) and self.num_envs >= 2,
                 f"num_envs={self.num_envs!r} is not accepted: a TGRPO group needs at least 2 parallel envs "
                 "to compare (give --num-envs 2 or more).")
        _require(_is_int(self.seed), f"seed={self.seed!r} is not accepted: give an int.")
        _require(self.vectorization in ("async", "ray"),
                 f"vectorization={self.vectorization!r} is not accepted: choose 'async' or 'ray'.")
        _require(self.ray_address is None or self.vectorization == "ray",
                 f"ray_address={self.ray_address!r} needs vectorization='ray' (give --vectorization ray).")
        if self.vectorization == "ray":
            _require(importlib.util.find_spec("ray") is not None,
                     "vectorization='ray' needs Ray, which is not installed: pip install 'libero-tgrpo[ray]'.")
        _require(bool(self.output_dir), "output_dir is empty: give a directory (--output-dir).")
        _require(not (self.overwrite and (self.resume or self.resume_or_start)),
                 "--overwrite and --resume / --resume-or-start exclude each other: give one of them.")
        self.hidden = parse_hidden(self.hidden)
        if self.policy not in ("state", "vision"):
            from tgrpo.policies.common import looks_like_model

            problem = looks_like_model(self.policy)
            _require(problem is None, f"policy={self.policy!r} is not 'state' or 'vision', and {problem}")
        for name in ("video_interval", "snapshot_interval"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 0, f"{name}={v!r} is not accepted: give an int >= 0 (0: off).")
        _require(self.select in ("final", "heldout"),
                 f"select={self.select!r} is not accepted: choose 'final' or 'heldout'.")
        for name in ("select_placements", "select_points"):
            v = getattr(self, name)
            _require(_is_int(v) and v >= 1, f"{name}={v!r} is not accepted: give an int >= 1.")
        _require(self.select == "final" or self.policy in ("state", "vision"),
                 f"select='heldout' keeps a copy of the best weights, which the built-in policies support; "
                 f"policy={self.policy!r} is a Hugging Face model: use select='final' (--select final).")
        _require(self.video_state is None or 0 <= self.video_state < NUM_INIT_STATES,
                 f"video_state={self.video_state!r} is not accepted: benchmark states are 0-{NUM_INIT_STATES - 1}.")
        _require(isinstance(self.demos, DemoConfig) and isinstance(self.sft, SFTConfig)
                 and isinstance(self.rl, TGRPOConfig) and isinstance(self.ppo, PPOConfig)
                 and isinstance(self.eval, EvalConfig),
                 "PipelineConfig's demos, sft, rl, ppo and eval must be DemoConfig, SFTConfig, TGRPOConfig, "
                 "PPOConfig and EvalConfig instances.")
        # The configs the stages will run with, built now so that every combination is checked up front.
        self.rl_config(Path(self.output_dir) / self.method)
        self.sft_config()

    @property
    def env_backend(self) -> dict[str, Any]:
        """Keyword arguments of the vector envs that choose where their sub-envs run."""
        if self.vectorization == "ray":
            return {"vectorization": "ray", "ray_address": self.ray_address}
        return {"vectorization": self.vectorization}

    @property
    def obs_mode(self) -> str:
        """Observation mode of the policy's env."""
        from libero_tgrpo.policies import obs_mode_for

        return obs_mode_for(self.policy)

    @property
    def alphas(self) -> tuple[float, float]:
        """``(alpha1, alpha2)`` of the method on the task."""
        return method_alphas(self.method, self.task, self.alpha1, self.alpha2, self.normalize_alphas)

    @property
    def demo_seed(self) -> int:
        """Seed of the demonstration set."""
        return self.seed if self.demos.demo_seed is None else self.demos.demo_seed

    def policy_kwargs(self) -> dict[str, Any]:
        """``build_policy``'s keyword arguments for ``policy``: the ``hf`` options for a Hugging Face model."""
        return {} if self.policy in ("state", "vision") else self.hf.policy_kwargs()

    def env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the training envs (the camera size of a Hugging Face VLA's env)."""
        if self.policy in ("state", "vision") or self.hf.image_size is None:
            return {}
        return {"image_size": self.hf.image_size}

    def sft_config(self) -> SFTConfig:
        """The SFT stage's config (``sft`` with the run's seed)."""
        return dataclasses.replace(self.sft, seed=self.seed)

    def rl_config(self, out_dir: str | Path) -> RLConfig:
        """The RL stage's config: a :class:`~tgrpo.TGRPOConfig` with the method's alphas, or for PPO a
        :class:`~tgrpo.baselines.PPOConfig` made of ``rl``'s shared options and ``ppo``'s own."""
        a1, a2 = self.alphas
        extra = {"task": self.task, "method": self.method, "policy": self.policy, **self.extra}
        tcfg = dataclasses.replace(self.rl, alpha1=a1, alpha2=a2, seed=self.seed, output_dir=str(out_dir),
                                   resume=self.resume or self.resume_or_start, progress_bar=self.progress, extra=extra)
        if self.method != "ppo":
            return tcfg
        shared = {k: v for k, v in tcfg.shared().items() if k not in ("epochs", "log_formats")}
        return dataclasses.replace(self.ppo, **shared)

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with ``changes``; ``"section.field"`` keys (``"rl.lr"``, ``"eval.states"``) change a part."""
        top: dict[str, Any] = {k: v for k, v in changes.items() if "." not in k}
        parts: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if "." in key:
                section, name = key.split(".", 1)
                parts.setdefault(section, {})[name] = value
        for section, values in parts.items():
            top[section] = dataclasses.replace(top.get(section, getattr(self, section)), **values)
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: every option (the parts as nested dicts) and the resolved ``alphas``."""
        d = dataclasses.asdict(self)
        for part in ("rl", "ppo"):
            d[part]["log_formats"] = list(d[part]["log_formats"])
        d["hidden"] = list(self.hidden)
        d["eval"]["states"] = list(self.eval.states)
        d["alphas"] = list(self.alphas)
        return d
