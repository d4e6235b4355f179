"""The model families :class:`tgrpo.policies.hf.HFVLAPolicy` knows, and how it loads them.

OpenVLA's conventions (prompt, empty token, action un-normalisation with ``norm_stats``/``unnorm_key``, the model
preset), the LoRA settings and their target layers, and the loading helpers behind
:meth:`HFVLAPolicy.from_pretrained`: dtype names, local path or Hub id checks, one-line load failures, the Auto
class of a config, the processor's image token. transformers and peft are imported inside the functions that
need them (``pip install libero-tgrpo[hf]``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tgrpo.policies.common import looks_like_model

#: OpenVLA's prompt (``{instruction}`` is lower-cased, as in OpenVLA's LIBERO evaluation).
OPENVLA_PROMPT = "In: What action should the robot take to {instruction}?\nOut:"
#: Learning rate of the paper for OpenVLA-7B + LoRA (used when ``TGRPOConfig.lr`` is None).
HF_RECOMMENDED_LR = 1e-5
#: OpenVLA appends this id (Llama-2's empty "▁" token) after "Out:" before the action tokens.
OPENVLA_EMPTY_TOKEN_ID = 29871
#: Processor outputs laid out along the text (rebuilt per row by the adapter, never passed on as they are).
TEXT_ALIGNED_KEYS = ("input_ids", "attention_mask", "token_type_ids")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Name of the peft adapter that holds the frozen reference policy (see :meth:`HFVLAPolicy.reset_reference`).
REFERENCE_ADAPTER = "reference"
#: Prefix of the reference adapter's entries in :meth:`HFVLAPolicy.state_dict`.
REFERENCE_PREFIX = "reference/"


class HFLoadError(ValueError):
    """A model that could not be loaded: the message names the path and what was tried, on one line."""


def openvla_prompt(instruction: str, template: str = OPENVLA_PROMPT) -> str:
    """OpenVLA's prompt for an instruction.

    Example:
        >>> openvla_prompt("Pick up the BBQ sauce")
        'In: What action should the robot take to pick up the bbq sauce?\\nOut:'
    """
    return template.format(instruction=instruction.strip().lower())


@dataclass
class LoRASettings:
    """The peft LoRA adapter the policy trains (OpenVLA's fine-tuning defaults).

    Attributes:
        r: LoRA rank.
        alpha: LoRA scaling numerator (``lora_alpha``; the update is scaled by ``alpha / r``).
        dropout: LoRA dropout; keep 0 so that sampling and recomputed log-probs agree (ratio 1 at start).
        target_modules: module names to adapt, or ``"all-linear"`` (every linear layer but the output head).
        init_lora_weights: peft's initialisation; ``True`` makes B = 0, so the adapted model starts equal to
            the base model (the reference).
    """

    r: int = 32
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | Sequence[str] = "all-linear"
    init_lora_weights: bool | str = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"LoRA rank r={self.r} must be a positive integer (OpenVLA uses 32).")
        if self.alpha <= 0:
            raise ValueError(f"LoRA alpha={self.alpha} must be positive.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout={self.dropout} must lie in [0, 1).")

    def to_peft(self, model: nn.Module | None = None) -> Any:
        """The equivalent ``peft.LoraConfig``; with ``model``, ``"all-linear"`` is resolved to its linear layers'
        names here (:func:`all_linear_targets`), so that every peft version adapts the same layers."""
        from peft import LoraConfig

        if isinstance(self.target_modules, str):
            targets: Any = self.target_modules
            if targets == "all-linear" and model is not None:
                targets = all_linear_targets(model)
        else:
            targets = list(self.target_modules)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=targets,
            init_lora_weights=self.init_lora_weights,
            **self.extra,
        )


def all_linear_targets(model: nn.Module) -> list[str]:
    """Names (last component) of the model's linear layers, without its output head: what ``"all-linear"``
    means. peft 0.11 (OpenVLA's pin) keeps a nested head such as ``language_model.lm_head`` in that set, which
    would train the whole head and write it into every adapter; newer peft leaves it out, and so does this.

    Raises:
        ValueError: if the model has no linear layer besides its head.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear: tuple[type, ...] = (nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        linear += (Conv1D,)
    except ImportError:  # pragma: no cover - transformers always has it
        pass
    head_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if head is not None and m is head}
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, linear) and m is not head}
    names -= head_names
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layer besides its output head to put LoRA on.")
    return sorted(names)


def openvla_action_transform(
    action_stats: Mapping[str, Any], binarize_gripper: bool = True, invert_gripper: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """OpenVLA's un-normalisation of decoded actions, as in its LIBERO evaluation.

    OpenVLA checkpoints fine-tuned on a dataset emit actions normalised to [-1, 1] by the dataset's 1st/99th
    percentiles; ``predict_action(unnorm_key=...)`` maps them back, and OpenVLA's LIBERO evaluation then maps
    the gripper from [0, 1] to [-1, 1] (optionally binarised) and flips its sign (LIBERO: -1 open, +1 close).

    Args:
        action_stats: ``model.norm_stats[unnorm_key]["action"]`` with ``q01``, ``q99`` and optional ``mask``.
        binarize_gripper: round the gripper to -1 / +1.
        invert_gripper: flip the gripper sign (OpenVLA's LIBERO datasets use the opposite convention).

    Returns:
        a function [B, 7] normalised actions -> [B, 7] env actions (float32).
    """
    low = np.asarray(action_stats["q01"], dtype=np.float64)
    high = np.asarray(action_stats["q99"], dtype=np.float64)
    mask = np.asarray(action_stats.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)

    def transform(actions: np.ndarray) -> np.ndarray:
        a = np.where(mask, 0.5 * (actions + 1.0) * (high - low) + low, actions)
        a[..., -1] = 2.0 * a[..., -1] - 1.0
        if binarize_gripper:
            a[..., -1] = np.sign(a[..., -1])
        if invert_gripper:
            a[..., -1] = -a[..., -1]
        return a.astype(np.float32)

    return transform


def resolve_unnorm_key(norm_stats: Mapping[str, Any], unnorm_key: str | None) -> str:
    """The ``norm_stats`` entry that un-normalises actions, chosen as OpenVLA's ``predict_action`` does: the
    given key, or the only entry when none is given.

    Raises:
        ValueError: naming the available keys, when the key is missing from ``norm_stats``, when none is given
            and there are several, or when the model has no ``norm_stats`` at all.
    """
    keys = sorted(norm_stats)
    if not keys:
        raise ValueError(
            f"unnorm_key={unnorm_key!r} was given, but the model has no norm_stats (action statistics); only "
            "OpenVLA-style checkpoints carry them. Leave unnorm_key unset for this model."
        )
    if unnorm_key is None:
        if len(keys) == 1:
            return keys[0]
        raise ValueError(
            f"the model has action statistics for {len(keys)} datasets {keys}; pass unnorm_key (--unnorm-key) "
            "naming the one its actions were trained on, e.g. 'libero_object'."
        )
    if unnorm_key not in norm_stats:
        raise ValueError(f"unnorm_key={unnorm_key!r} is not in the model's norm_stats; available: {keys}.")
    return unnorm_key


@dataclass(frozen=True)
class ModelPreset:
    """The adapter's defaults that depend on the model family (each can be overridden by its argument)."""

    extra_prompt_ids: tuple[int, ...] = ()
    """Ids appended after the prompt, before the action tokens."""
    use_cache: bool = True
    """KV cache while sampling."""
    mirror_images: bool = False
    """Flip camera images left-right before the processor (see ``HFVLAPolicy``'s ``mirror_images``)."""
    decoder_attr: str | None = None
    """Submodule of the base model that takes the cached decoding steps (one new token per row, after the
    prompt's forward filled the KV cache); None: the model's own forward."""


OPENVLA_PRESET = ModelPreset(
    extra_prompt_ids=(OPENVLA_EMPTY_TOKEN_ID,), use_cache=True, mirror_images=True, decoder_attr="language_model"
)
"""OpenVLA's (``model_type == "openvla"``): its empty token (29871) after "Out:"; images mirrored left-right (its
LIBERO data and evaluation rotate robosuite's raw images by 180 degrees, which is the upright view mirrored); KV
cache while sampling, with the decoding steps sent straight to its ``language_model``: its own forward allows a
cached step at batch size 1 only (an assertion), and that branch does nothing but call ``language_model`` with the
cache. The prompt's forward (image patches inserted after BOS) still goes through the model's forward."""


def model_preset(config: Any) -> ModelPreset:
    """The preset of a model config: :data:`OPENVLA_PRESET` for OpenVLA, the generic defaults otherwise."""
    return OPENVLA_PRESET if getattr(config, "model_type", "") == "openvla" else ModelPreset()


def resolve_dtype(dtype: str | torch.dtype) -> str | torch.dtype:
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if dtype not in DTYPES:
        raise ValueError(
            f"dtype={dtype!r} is not accepted; use 'auto', one of {sorted(DTYPES)} or a torch.dtype."
        )
    return DTYPES[dtype]


def check_model_path(path: str | os.PathLike) -> str:
    """A local directory with a config.json, or a Hub id ("org/name") left to transformers.

    Raises:
        HFLoadError: for a directory without config.json, or a value that is neither a directory nor a Hub id.
    """
    problem = looks_like_model(path)
    if problem is not None:
        raise HFLoadError(problem)
    p = Path(path).expanduser()
    return str(p) if p.is_dir() else str(path)


def hub_offline() -> bool:
    """Whether the Hugging Face Hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    on = ("1", "true", "yes", "on")
    return any(os.environ.get(v, "").strip().lower() in on for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def load_failure(src: str, what: str, error: BaseException) -> str:
    """One line that names the path, what was tried and why it failed."""
    if Path(src).is_dir():
        tried = f"the local directory {src!r}"
    else:
        tried = (
            f"no local directory {src!r}, then the Hugging Face Hub id {src!r}"
            + (" from the local cache only (HF_HUB_OFFLINE is set)" if hub_offline() else "")
        )
    reason = " ".join(str(error).split()).rstrip(".")
    if len(reason) > 1000:
        reason = reason[:997] + "..."
    hint = ""
    if "trust_remote_code" in reason:
        hint = " The model ships its own code: pass trust_remote_code=True (--trust-remote-code) if you trust it."
    elif not Path(src).is_dir():
        hint = (
            " Download it where the Hub is reachable (huggingface-cli download ...) and pass the local "
            "directory, or unset HF_HUB_OFFLINE."
        )
    return f"cannot load {what} from {src!r}: tried {tried}; {type(error).__name__}: {reason}.{hint}"


def auto_model_class(config: Any, src: str, trust_remote_code: bool) -> Any:
    """The class whose ``from_pretrained`` loads a vision-to-text model: the transformers Auto class named in
    the config's ``auto_map`` first; where that Auto class is gone from the installed transformers
    (``AutoModelForVision2Seq``, OpenVLA's, is not in transformers 5), the model code class it names, when
    remote code is trusted; else ``AutoModelForVision2Seq`` / ``AutoModelForImageTextToText``."""
    import transformers

    names = ("AutoModelForVision2Seq", "AutoModelForImageTextToText", "AutoModelForCausalLM")
    auto_map = getattr(config, "auto_map", None) or {}
    for name in names:
        if name in auto_map and hasattr(transformers, name):
            return getattr(transformers, name)
    for name in names:
        if name in auto_map and trust_remote_code:
            from transformers.dynamic_module_utils import get_class_from_dynamic_module

            return get_class_from_dynamic_module(auto_map[name], src)
    for name in names[:2]:
        if hasattr(transformers, name):
            return getattr(transformers, name)
    raise ValueError(
        f"transformers {transformers.__version__} has none of {names[:2]}; install transformers>=4.40."
    )


def image_token_of(processor: Any, text_tokenizer: Any, config: Any) -> str | None:
    """The placeholder a LLaVA-style prompt needs for its image, or None for a model that inserts the image
    itself (OpenVLA). transformers >= 4.47 processors name it (``processor.image_token``); older ones leave it
    to the model, whose config has its id (``image_token_index``, ``image_token_id`` in newer configs)."""
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        return token
    for name in ("image_token_index", "image_token_id"):
        idx = getattr(config, name, None)
        if isinstance(idx, int) and idx >= 0 and hasattr(text_tokenizer, "convert_ids_to_tokens"):
            found = text_tokenizer.convert_ids_to_tokens(idx)
            if isinstance(found, str):
                return found
    return None


def load_model_and_processor(
    path: str | os.PathLike,
    *,
    trust_remote_code: bool = False,
    dtype: str | torch.dtype = "bfloat16",
    device: str | torch.device | None = None,
    attn_implementation: str | None = None,
    adapter_path: str | os.PathLike | None = None,
    processor_path: str | os.PathLike | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Any, Any]:
    """The model (a ``PeftModel`` when ``adapter_path`` is given, with its ``reference/`` adapter when there is one)
    and its processor, for :meth:`HFVLAPolicy.from_pretrained` (which documents the arguments).

    Raises:
        HFLoadError: one line naming the path and what was tried, for anything that cannot be loaded.
    """
    import transformers
    from transformers import AutoConfig, AutoProcessor

    src = check_model_path(path)
    proc_src = check_model_path(processor_path) if processor_path is not None else src
    torch_dtype = resolve_dtype(dtype)
    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise HFLoadError(load_failure(src, "the model config", e)) from None
    auto_cls = auto_model_class(config, src, trust_remote_code)
    major = int(transformers.__version__.split(".")[0])
    kw: dict[str, Any] = {
        "trust_remote_code": trust_remote_code,
        ("dtype" if major >= 5 else "torch_dtype"): torch_dtype,
    }
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    kw.update(model_kwargs or {})
    try:
        model = auto_cls.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        raise HFLoadError(load_failure(src, "the model weights", e)) from None
    try:
        processor = AutoProcessor.from_pretrained(proc_src, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise HFLoadError(load_failure(proc_src, "the processor", e)) from None
    if device is not None:
        model.to(device)
    if adapter_path is not None:
        from peft import PeftModel

        adapter = Path(adapter_path)
        if not (adapter / "adapter_config.json").is_file():
            raise HFLoadError(
                f"cannot load the adapter from {str(adapter)!r}: no adapter_config.json there; pass a "
                "directory written by HFVLAPolicy.save_pretrained (or peft's save_pretrained)."
            )
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        if (adapter / REFERENCE_ADAPTER / "adapter_config.json").is_file():
            model.load_adapter(str(adapter / REFERENCE_ADAPTER), adapter_name=REFERENCE_ADAPTER)
    return model, processor
