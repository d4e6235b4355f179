"""The configs of the pipeline's stages: demonstrations, SFT, evaluation and loading a Hugging Face VLA.

:class:`~libero_tgrpo.config.PipelineConfig` composes them (its ``demos``, ``sft``, ``eval`` and ``hf``
fields); each checks its own values in ``__post_init__``, so a bad value fails before any work starts. All of
them are also importable from :mod:`libero_tgrpo.config`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from libero_gym import MAX_EPISODE_STEPS, NUM_INIT_STATES, TERMINATION_KEYS
from libero_gym.experts import LIFT_RULES, ExpertConfig
from libero_tgrpo.parsing import parse_states
from tgrpo.config import ConfigError

__all__ = ["DEMO_UNTIL", "DemoConfig", "EvalConfig", "SFTConfig", "HFConfig", "require", "is_int"]


def require(ok: bool, message: str) -> None:
    """Check one option value: raise :class:`tgrpo.config.ConfigError` with ``message`` (which names the value
    and what is accepted) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def is_int(v: Any) -> bool:
    """Whether ``v`` is an ``int`` and not a ``bool`` (``True`` is not accepted as a count)."""
    return isinstance(v, int) and not isinstance(v, bool)


DEMO_UNTIL = "is_success"
"""Where the expert's episodes end by default (``DemoConfig.until``, ``--demo-until``): at LIBERO's success. Chosen
by the SFT regime study on held-out training placements (``benchmarks/results/demo_until_study.md``): the main
job's SFT (20 demonstrations, 100 epochs) on Tasks 2, 4 and 10 reached far higher held-out success from
demonstrations that end at LIBERO's success than from ones that go on through the release (``"is_placed"``),
whose release steps, labelled "open" right above the object, make the state policy close its gripper too high
(Task2: 0% instead of 80-97%). RL still trains on episodes that end on placement, and learns the release there.
"""

EXPERT_CLOSE_STEPS = ExpertConfig.close_steps
"""The scripted expert's default ``close_steps`` (6): what the demonstrations of every recorded run used."""

EXPERT_LIFT = ExpertConfig.lift_rule
"""The scripted expert's default lift rule (``"timer"``): what the demonstrations of every recorded run used."""


@dataclass
class DemoConfig:
    """Options of the demonstrations stage (the scripted expert on training placements)."""

    num_demos: int = 20
    """Successful expert episodes to clone."""
    demo_seed: int | None = None
    """Seed of the demonstration set (None: the run's seed)."""
    demo_noise: float = 0.0
    """Standard deviation of the noise on the x and y position actions the expert executes; the demonstrations
    record its noise-free actions, so they show how to come back from a miss (0: a deterministic expert)."""
    expert_close_steps: int = EXPERT_CLOSE_STEPS
    """Steps the expert holds the gripper closed at least before lifting (``ExpertConfig.close_steps``); it lifts
    once the fingers have also stopped moving, at most three times as many steps. With 0 it starts lifting at the
    first closed step (the fingers close during the slow lift); with more, it can wait at a still state for a
    count the state does not show. Under ``expert_lift="still"`` it is only the cap."""
    expert_lift: str = EXPERT_LIFT
    """When the expert lifts the closed gripper (``ExpertConfig.lift_rule``): ``"timer"`` (``expert_close_steps``
    steps, then once the fingers settle) or ``"still"`` (at the first step the fingers stop, which the state
    shows: every hold is at a state where they still move)."""
    demo_cache: str = "outputs/demos"
    """Directory of cached demonstration sets (shared between runs)."""
    demos_path: str | None = None
    """Use this demonstrations file (.npz) instead of the cache."""
    workers: int = 2
    """Worker processes that generate demonstrations."""
    until: Literal["is_placed", "is_success"] = DEMO_UNTIL  # type: ignore[assignment]
    """Where an expert episode ends: is_success (LIBERO's predicate, before the release; the default, chosen on
    held-out placements) or is_placed (the object released in the undisturbed basket, so the demonstrations show
    the release)."""

    def __post_init__(self) -> None:
        require(self.until in TERMINATION_KEYS,
                f"until={self.until!r} is not accepted: choose is_placed or is_success (--demo-until).")
        require(is_int(self.num_demos) and self.num_demos >= 1,
                f"num_demos={self.num_demos!r} is not accepted: give an int >= 1 (--num-demos).")
        require(isinstance(self.demo_noise, (int, float)) and 0 <= self.demo_noise < float("inf"),
                f"demo_noise={self.demo_noise!r} is not accepted: it must be a finite number >= 0 (--demo-noise).")
        require(is_int(self.expert_close_steps) and self.expert_close_steps >= 0,
                f"expert_close_steps={self.expert_close_steps!r} is not accepted: give an int >= 0 "
                "(--expert-close-steps).")
        require(self.expert_lift in LIFT_RULES,
                f"expert_lift={self.expert_lift!r} is not accepted: choose from {', '.join(LIFT_RULES)} "
                "(--expert-lift).")
        require(is_int(self.workers) and self.workers >= 1,
                f"workers={self.workers!r} is not accepted: give an int >= 1 (--workers).")
        require(self.demo_seed is None or is_int(self.demo_seed),
                f"demo_seed={self.demo_seed!r} is not accepted: give an int or None (--demo-seed).")


@dataclass
class EvalConfig:
    """Options of the evaluation on LIBERO-Object's benchmark initial states."""

    states: tuple[int, ...] = tuple(range(NUM_INIT_STATES))
    """Benchmark states to evaluate on: 'all' (the 50), '0-9' or '0,3,7'."""
    envs: int = 2
    """Parallel envs of the evaluation."""
    max_steps: int = MAX_EPISODE_STEPS
    """Step cap of an evaluation episode (280)."""
    temperature: float = 0.0
    """0: greedy decoding (argmax token); > 0 samples."""

    def __post_init__(self) -> None:
        self.states = parse_states(self.states)
        require(is_int(self.envs) and self.envs >= 1,
                f"eval_envs={self.envs!r} is not accepted: give an int >= 1 (--eval-envs).")
        require(is_int(self.max_steps) and self.max_steps >= 1,
                f"eval_max_steps={self.max_steps!r} is not accepted: give an int >= 1 (--eval-max-steps).")
        require(isinstance(self.temperature, (int, float)) and 0 <= self.temperature < float("inf"),
                f"eval_temperature={self.temperature!r} is not accepted: it must be a finite number >= 0 "
                "(0: greedy) (--eval-temperature).")


@dataclass
class SFTConfig:
    """Options of behaviour cloning."""

    epochs: int = 10
    """Passes over the demonstrations."""
    batch_size: int = 256
    """Samples (time steps) per optimizer step."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float | None = 1.0
    """Clip the global gradient norm to this value; None disables clipping."""
    seed: int = 0
    """Seed of the minibatch order."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"SFTConfig.{name}={v!r} is not accepted: give an int >= 1.")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"SFTConfig.lr={self.lr!r} is not accepted: give a finite number > 0, e.g. 1e-3.")
        if self.weight_decay < 0:
            raise ValueError(f"SFTConfig.weight_decay={self.weight_decay!r} is not accepted: give a number >= 0.")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"SFTConfig.max_grad_norm={self.max_grad_norm!r} must be > 0 or None.")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for logs."""
        return dataclasses.asdict(self)


@dataclass
class HFConfig:
    """How a Hugging Face VLA (``--policy`` a model directory or Hub id, e.g. OpenVLA) is loaded and trained;
    ignored by the built-in policies. See docs/openvla.md."""

    device: str | None = None
    """Device of the model: 'cuda', 'cuda:1', 'cpu'; None: cuda when available, else cpu."""
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = "bfloat16"
    """Weights' dtype (LoRA weights stay float32)."""
    trust_remote_code: bool = False
    """Run the model's own Python code (OpenVLA needs it); only for models you trust."""
    unnorm_key: str | None = None
    """Dataset whose action statistics (the model's norm_stats) un-normalise actions, e.g. libero_object."""
    lora_r: int = 32
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA alpha (the update is scaled by alpha / r)."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass; None: on when the model is on a CUDA device."""
    micro_batch_size: int = 8
    """Rows per forward pass of the model."""
    image_size: int | None = None
    """Side of the env's camera images in pixels for training (None: the env's default, 128)."""
    recompute_old_log_probs: bool = False
    """Recompute the sampled tokens' log-probs with the update's forward, so that the importance ratio is
    exactly 1 at the first update (one more forward per step)."""
    static_cache: bool = False
    """Decode the action tokens on a preallocated KV cache with fixed shapes (same tokens as the dynamic cache)."""
    compile_decoding: bool = False
    """Also compile the decoding step with torch.compile (CUDA graphs on a GPU; implies --static-cache); the
    first action of each batch size compiles."""
    compile_prefill: bool = False
    """Also compile the prompt's forward, which then writes straight into the static cache (transformers 5.x,
    LLaVA-style models; implies --static-cache); the first action of each batch size and prompt length compiles."""
    merged_sampling: bool = False
    """Sample on a merged copy of the base weights with the LoRA adapter folded in (no adapter kernels while
    sampling; merged again only after an update; about 13 GiB more GPU memory for a 7B model in bf16)."""

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha", "micro_batch_size"):
            v = getattr(self, name)
            require(is_int(v) and v >= 1, f"{name}={v!r} is not accepted: give an int >= 1 "
                    f"(--{name.replace('_', '-')}).")
        require(self.image_size is None or (is_int(self.image_size) and 16 <= self.image_size <= 2048),
                f"image_size={self.image_size!r} is not accepted: give an int in [16, 2048] or None (--image-size).")
        require(self.dtype in ("bfloat16", "float16", "float32", "auto"),
                f"dtype={self.dtype!r} is not accepted: choose bfloat16, float16, float32 or auto (--dtype).")

    def policy_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``libero_tgrpo.policies.build_policy`` for a Hugging Face model (plain data)."""
        import torch

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        checkpointing = self.gradient_checkpointing
        if checkpointing is None:
            checkpointing = device.startswith("cuda")
        return {"device": device, "dtype": self.dtype, "trust_remote_code": self.trust_remote_code,
                "unnorm_key": self.unnorm_key, "lora_r": self.lora_r, "lora_alpha": self.lora_alpha,
                "gradient_checkpointing": checkpointing, "micro_batch_size": self.micro_batch_size,
                "recompute_old_log_probs": self.recompute_old_log_probs, "static_cache": self.static_cache,
                "compile_decoding": self.compile_decoding, "compile_prefill": self.compile_prefill,
                "merged_sampling": self.merged_sampling}
