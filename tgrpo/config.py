"""Options of :func:`tgrpo.train` and of the PPO baseline, documented where they are declared.

:class:`RLConfig` holds the options TGRPO and PPO share; :class:`TGRPOConfig` and
:class:`tgrpo.baselines.PPOConfig` extend it. Broken values and combinations are rejected in ``__post_init__``
with a message that names the value, what is accepted, and how to fix it. :meth:`TGRPOConfig.paper` gives the
settings of the paper (OpenVLA-7B + LoRA): lr 1e-5, 200 steps per episode, per-time-step updates.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

RATIO_LEVELS = ("token", "action")
"""Where the clipped ratio is taken (:func:`tgrpo.loss.tgrpo_loss`): per action token or per 7-token action."""
ROLLOUT_MODES = ("paper", "independent")
"""How a group's trajectories end (:func:`tgrpo.rollout.collect_group`)."""
UPDATE_SCHEDULES = ("per_step", "minibatch")
ADVANTAGE_MODES = ("tgrpo", "grpo_success")
LOG_FORMATS = ("jsonl", "csv", "tensorboard", "wandb")
#: Learning rate used when neither the config nor the policy gives one (the paper's, OpenVLA + LoRA).
DEFAULT_LR = 1e-5


class ConfigError(ValueError):
    """A ``TGRPOConfig`` value or combination that cannot work."""


@dataclass
class RLConfig:
    """Options that TGRPO and the PPO baseline share: rollouts, optimisation and run bookkeeping.

    :class:`TGRPOConfig` and :class:`tgrpo.baselines.PPOConfig` extend it with their own options; each shared
    option is declared, documented and checked here once (:meth:`validate`).
    """

    iterations: int = 30
    """Number of groups to collect and learn from (the paper's 'episodes', 30 per task)."""
    max_steps: int = 200
    """Step cap per trajectory (the paper uses 200 in training)."""
    temperature: float = 1.0
    """Sampling temperature of the action tokens during rollouts (> 0)."""
    success_key: str = "is_success"
    """Boolean ``info`` key read as success: it ends a ``"paper"`` group, gives the success rate and the
    ``"grpo_success"`` advantages. ``libero_gym`` also provides ``"is_placed"`` (released in an undisturbed
    basket), which the ``libero_tgrpo`` pipeline uses."""
    lr: float | None = None
    """AdamW learning rate. None: the policy's ``recommended_lr`` attribute when it has one (1e-2 for the
    small built-in ``MLPTokenPolicy``), else ``DEFAULT_LR`` = 1e-5, the paper's value for OpenVLA-7B + LoRA."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value before each optimizer step; None disables clipping."""
    max_nonfinite_skips: int = 10
    """An optimizer step whose loss or gradient is nan/inf is skipped (counted as ``losses/nonfinite_skips``);
    this many skipped steps in a row stop training with ``tgrpo.NonFiniteError`` (>= 1)."""
    clip_eps: float = 0.2
    """PPO clipping range epsilon of the ratio (eq. 3), in (0, 1)."""
    kl_beta: float = 0.04
    """Weight beta of the KL penalty to the reference policy (k3 estimator); 0 disables it."""
    target_kl: float | None = None
    """Early stop of an iteration's updates: when the batch's KL to the rollout policy (``losses/approx_kl``,
    per action) exceeds 1.5 x ``target_kl`` before an optimizer step, that step and the rest of the
    iteration's are skipped (rule in tgrpo.kl_control). None: off (every scheduled step runs)."""
    ratio_level: str = "token"
    """``"token"``: one ratio per action token (7 per action), surrogate averaged over tokens.
    ``"action"``: one ratio per 7-token action (product of the token ratios)."""
    epochs: int = 1
    """Passes over each group's data per iteration (TGRPO as in the paper: 1)."""
    minibatch_size: int = 256
    """Samples per optimizer step in minibatch updates (TGRPO's ``"minibatch"`` schedule and PPO)."""
    seed: int = 0
    """Seed of torch, NumPy and the env resets (iteration k resets with ``seed + k * M``)."""
    output_dir: str = "runs/tgrpo"
    """Directory for metrics, checkpoints and the training-curve plot."""
    log_formats: tuple[str, ...] = ("jsonl", "csv", "tensorboard")
    """Metric sinks, any of ``"jsonl"`` (metrics.jsonl), ``"csv"`` (metrics.csv), ``"tensorboard"`` (tb/),
    ``"wandb"`` (Weights & Biases; extra ``[wandb]``, ``WANDB_MODE=offline`` works without a network)."""
    progress_bar: bool = True
    """Show a tqdm progress bar over iterations and print a log line every ``log_interval`` iterations
    (the line also goes to the ``"tgrpo"`` logger at INFO level either way)."""
    plot: bool = True
    """Write ``training_curve.png`` to ``output_dir`` at the end (needs matplotlib; skipped without it)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form values recorded with the run (e.g. the task name); not used by the trainer."""

    def __post_init__(self) -> None:
        self.log_formats = tuple(self.log_formats)
        self.validate()

    def shared(self) -> dict[str, Any]:
        """The values of the shared options (the fields of :class:`RLConfig`), e.g. to build a PPO config from
        a TGRPO one: ``PPOConfig(**tgrpo_config.shared())``."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RLConfig)}

    def resolve_lr(self, policy: Any) -> float:
        """The learning rate to use with ``policy``: ``lr``, else ``policy.recommended_lr``, else 1e-5."""
        if self.lr is not None:
            return float(self.lr)
        return float(getattr(policy, "recommended_lr", DEFAULT_LR))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable) for logs and checkpoints."""
        d = dataclasses.asdict(self)
        d["log_formats"] = list(self.log_formats)
        return d

    def validate(self) -> None:
        """Check the shared options.

        Raises:
            ConfigError: naming the bad value, what is accepted, and how to fix it.
        """
        name = type(self).__name__
        check_choice(self, "ratio_level", RATIO_LEVELS)
        check_info_key(self, "success_key")
        for fmt in self.log_formats:
            check_choice(self, "log_formats entry", LOG_FORMATS, fmt)
        check_positive_int(self, "max_steps", "e.g. max_steps=200 (the paper's cap)")
        check_positive_int(self, "iterations", "e.g. iterations=30")
        check_positive_int(self, "epochs", "e.g. epochs=1 (the paper)")
        check_positive_int(self, "minibatch_size", "e.g. minibatch_size=256")
        check_positive_int(self, "max_nonfinite_skips", "e.g. max_nonfinite_skips=10")
        if self.lr is not None and (
            not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0
        ):
            raise ConfigError(
                f"{name}.lr={self.lr!r} is not accepted: the learning rate must be a finite number > 0. "
                "Fix: pass e.g. lr=1e-3 for the built-in policy or lr=1e-5 for OpenVLA + LoRA (the paper)."
            )
        if not isinstance(self.clip_eps, (int, float)) or not 0 < self.clip_eps < 1:
            raise ConfigError(
                f"{name}.clip_eps={self.clip_eps!r} is outside (0, 1), the range the clipped ratio "
                "needs. Fix: pass e.g. clip_eps=0.2."
            )
        if not isinstance(self.kl_beta, (int, float)) or not math.isfinite(self.kl_beta) or self.kl_beta < 0:
            raise ConfigError(
                f"{name}.kl_beta={self.kl_beta!r} is not accepted: it must be a finite number >= 0. "
                "Fix: pass e.g. kl_beta=0.04, or kl_beta=0 to drop the KL penalty."
            )
        check_optional_positive(self, "target_kl", "e.g. target_kl=0.05, or None to switch the early stop off")
        if (
            not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or (self.temperature <= 0)
        ):
            raise ConfigError(
                f"{name}.temperature={self.temperature!r} is not accepted: training samples need a "
                "temperature > 0 (0 would be greedy and give no exploration). Fix: pass e.g. temperature=1.0."
            )
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(
                f"{name}.max_grad_norm={self.max_grad_norm!r} must be > 0 or None (no clipping). "
                "Fix: pass e.g. max_grad_norm=1.0."
            )
        if not self.output_dir:
            raise ConfigError(f"{name}.output_dir is empty. Fix: pass a directory, e.g. 'runs/tgrpo'.")


@dataclass
class TGRPOConfig(RLConfig):
    """Options of TGRPO training (paper Algorithm 1 plus the usual PPO-style knobs).

    The options shared with PPO (iterations, max_steps, lr, temperature, clip_eps, kl_beta, ratio_level,
    epochs, minibatch_size, max_grad_norm, seed, output_dir, logging) are those of :class:`RLConfig`.
    """

    alpha1: float = 0.3
    """Weight of the step-level advantage S (eq. 8). 0 gives the trajectory-only variant. The paper tunes
    (alpha1, alpha2) per task: (0.3, 0.7), (10, 1), (1, 0.1), (10, 5), (0.35, 0.65)."""
    alpha2: float = 0.7
    """Weight of the trajectory-level advantage T (eq. 8). 0 gives the step-only variant."""
    advantage_mode: str = "tgrpo"
    """``"tgrpo"``: eq. 8 on the env rewards. ``"grpo_success"``: plain GRPO on binary success, every step
    of trajectory i gets the group-normalised ``is_success`` of i (alpha1/alpha2 are not used)."""
    group_size: int | None = None
    """M, the number of trajectories per group. Must equal ``env.num_envs``; None takes it from the env."""
    rollout_mode: str = "paper"
    """``"paper"``: the group ends at its first success or at ``max_steps``, all trajectories the same
    length. ``"independent"``: each env ends on its own; shorter trajectories are masked."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    update_schedule: str = "per_step"
    """``"per_step"``: Algorithm 1, one optimizer step per time step t over the M envs. ``"minibatch"``:
    shuffle all (i, t) samples and take ``epochs`` passes of ``minibatch_size``."""
    checkpoint_interval: int = 1
    """Write ``checkpoint.pt`` every this many iterations (and at the end); 0 writes only the final one."""
    resume: bool = False
    """Continue from ``output_dir/checkpoint.pt`` if it exists (policy, optimizer, RNG states, iteration)."""
    log_interval: int = 1
    """Print a log line every this many iterations (metrics are written every iteration)."""
    eval_interval: int = 0
    """Call the evaluation hook every this many iterations (and at the end); 0 disables it."""
    target_ref_kl: float | None = None
    """Adaptive KL weight: after each iteration beta is doubled when the mean KL to the reference
    (``losses/ref_kl``, per action) exceeded 1.5 x ``target_ref_kl`` and halved when it stayed under
    ``target_ref_kl`` / 1.5, starting from ``kl_beta`` (> 0) (rule in tgrpo.kl_control). None: off (beta fixed)."""

    @classmethod
    def paper(cls, **overrides: Any) -> TGRPOConfig:
        """The paper's settings (OpenVLA-7B + LoRA on LIBERO-Object), with ``overrides`` applied."""
        base: dict[str, Any] = dict(
            lr=1e-5, max_steps=200, iterations=30, update_schedule="per_step", rollout_mode="paper", epochs=1
        )
        base.update(overrides)
        return cls(**base)

    def validate(self, num_envs: int | None = None) -> None:
        """Check every field (and, when given, the env's ``num_envs``).

        Raises:
            ConfigError: naming the bad value, what is accepted, and how to fix it.
        """
        check_choice(self, "advantage_mode", ADVANTAGE_MODES)
        check_choice(self, "rollout_mode", ROLLOUT_MODES)
        check_choice(self, "update_schedule", UPDATE_SCHEDULES)
        for name in ("alpha1", "alpha2"):
            check_alpha(getattr(self, name), f"TGRPOConfig.{name}", f"Fix: pass e.g. {name}=0.5 (0 switches "
                        "that advantage term off).")
        if self.advantage_mode == "tgrpo" and self.alpha1 == 0 and self.alpha2 == 0:
            raise ConfigError(
                "TGRPOConfig.alpha1=0 and alpha2=0 make every advantage 0, so nothing would be learned. "
                "Fix: set alpha1 > 0 (step advantage), alpha2 > 0 (trajectory advantage), or both; "
                "or use advantage_mode='grpo_success'."
            )
        super().validate()
        check_optional_positive(self, "target_ref_kl", "e.g. target_ref_kl=1.0, or None to keep beta fixed")
        if self.target_ref_kl is not None and not self.kl_beta > 0:
            raise ConfigError(
                f"TGRPOConfig.target_ref_kl={self.target_ref_kl!r} adapts the KL weight, but kl_beta={self.kl_beta!r} "
                "gives it no starting value. Fix: pass kl_beta > 0 (e.g. 0.04) or target_ref_kl=None."
            )
        check_positive_int(self, "log_interval", "e.g. log_interval=1")
        for name in ("checkpoint_interval", "eval_interval"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(
                    f"TGRPOConfig.{name}={v!r} is not accepted: it must be an integer >= 0 (0 disables). "
                    f"Fix: pass e.g. {name}=1."
                )
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ConfigError(f"TGRPOConfig.weight_decay={self.weight_decay!r} must be >= 0. Fix: e.g. 0.0.")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 2):
            raise ConfigError(
                f"TGRPOConfig.group_size={self.group_size!r} is not accepted: a group needs at least 2 "
                "trajectories to compare. Fix: use a vector env with num_envs >= 2 and group_size=None."
            )
        if num_envs is not None:
            if num_envs < 2:
                raise ConfigError(
                    f"the vector env has num_envs={num_envs}; a TGRPO group needs at least 2 parallel "
                    "envs to compute relative advantages. Fix: build the vector env with num_envs >= 2 "
                    "(the group size M)."
                )
            if self.group_size is not None and self.group_size != num_envs:
                raise ConfigError(
                    f"TGRPOConfig.group_size={self.group_size} but the vector env has num_envs={num_envs}. "
                    "Fix: set group_size=None (taken from the env) or build the env with num_envs="
                    f"{self.group_size}."
                )


@dataclass
class PPOConfig(RLConfig):
    """Options of the PPO baseline: the options shared with TGRPO (:class:`~tgrpo.config.RLConfig`) and GAE's.

    Defaults that differ from TGRPO's: ``kl_beta=0`` (plain PPO), ``epochs=4`` passes over each rollout,
    ``output_dir="runs/ppo"``, no TensorBoard.
    """

    kl_beta: float = 0.0
    """Weight of a k3 KL penalty to the reference policy (0: plain PPO)."""
    epochs: int = 4
    """Passes over each rollout."""
    output_dir: str = "runs/ppo"
    """Directory for metrics, the final checkpoint and the plot."""
    log_formats: tuple[str, ...] = ("jsonl", "csv")
    """Metric sinks, any of ``"jsonl"``, ``"csv"``, ``"tensorboard"``."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]."""
    vf_coef: float = 0.5
    """Weight of the value-function loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    normalize_advantages: bool = True
    """Normalise advantages per minibatch (mean 0, std 1)."""
    value_max_grad_norm: float | None = None
    """Clip the value head's gradient norm to this value on its own, and the policy's to ``max_grad_norm`` on
    its own. None: one clip over the policy and the value head together (a large value gradient then
    shrinks the policy's step)."""
    normalize_value_targets: bool = False
    """The value head learns value targets normalised by their running mean and standard deviation (over
    every target seen so far); its outputs are mapped back before GAE. The staged reward's returns reach
    hundreds, which otherwise dominate the value loss."""
    env_step_budget: int | None = None
    """Stop once this many env steps have been collected (checked after each iteration; ``iterations`` stays
    the upper bound), e.g. the env steps of the TGRPO run it is compared with. None: run ``iterations``."""

    def validate(self) -> None:
        """Check every field.

        Raises:
            ConfigError: naming the bad value, what is accepted, and how to fix it.
        """
        super().validate()
        checks = [
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]", "gamma=0.99"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]", "gae_lambda=0.95"),
            ("vf_coef", self.vf_coef >= 0, ">= 0", "vf_coef=0.5"),
            ("env_step_budget", self.env_step_budget is None or (
                isinstance(self.env_step_budget, int) and not isinstance(self.env_step_budget, bool)
                and self.env_step_budget >= 1), "an integer >= 1 or None", "env_step_budget=20000"),
        ]
        check_optional_positive(self, "value_max_grad_norm", "e.g. value_max_grad_norm=1.0, or None")
        for name, ok, accepted, example in checks:
            if not ok:
                raise ConfigError(
                    f"PPOConfig.{name}={getattr(self, name)!r} is not accepted: it must be {accepted}. "
                    f"Fix: pass e.g. {example}."
                )


def check_alpha(value: Any, name: str, fix: str = "") -> float:
    """``value`` as an advantage weight (a finite number >= 0), or a :class:`ConfigError` naming ``name``.

    The one check of alpha1/alpha2, used by :class:`TGRPOConfig` and by callers that derive the weights
    (``libero_tgrpo.method_alphas``) before building one.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}={value!r} is not accepted: it must be a finite number >= 0." + (
            f" {fix}" if fix else ""))
    return float(value)


def check_choice(cfg: Any, name: str, accepted: tuple[str, ...], value: Any = None) -> None:
    """Raise a :class:`ConfigError` unless ``cfg.<name>`` (or ``value``) is one of ``accepted``."""
    value = getattr(cfg, name) if value is None else value
    if value not in accepted:
        raise ConfigError(
            f"{type(cfg).__name__}.{name}={value!r} is not known. Accepted: {', '.join(map(repr, accepted))}. "
            f"Fix: pass one of these, e.g. {accepted[0]!r}."
        )


def check_info_key(cfg: Any, name: str) -> None:
    """Raise a :class:`ConfigError` unless ``cfg.<name>`` names an ``info`` key (a non-empty string)."""
    value = getattr(cfg, name)
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"{name}={value!r} is not accepted: give the name of a boolean info key, e.g. {name}='is_success'."
        )


def check_optional_positive(cfg: Any, name: str, example: str) -> None:
    """Raise a :class:`ConfigError` unless ``cfg.<name>`` is None or a finite number > 0."""
    value = getattr(cfg, name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{type(cfg).__name__}.{name}={value!r} is not accepted: it must be a finite number > 0 or None. "
            f"Fix: pass {example}."
        )


def check_positive_int(cfg: Any, name: str, example: str) -> None:
    """Raise a :class:`ConfigError` unless ``cfg.<name>`` is an integer >= 1."""
    value = getattr(cfg, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"{type(cfg).__name__}.{name}={value!r} is not accepted: it must be an integer >= 1. "
            f"Fix: pass {example}."
        )
