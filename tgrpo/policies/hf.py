"""Hugging Face VLA adapter: an OpenVLA-style vision-to-text model + peft LoRA behind the token-action protocol.

:class:`HFVLAPolicy` loads any transformers vision-to-text model whose forward takes ``input_ids``,
``attention_mask`` and ``pixel_values`` and returns ``logits`` (OpenVLA-7B with ``trust_remote_code=True``, a
LLaVA-architecture model, ...), builds OpenVLA's prompt, and treats the last ``n_bins`` (256) ids of the
tokenizer's vocabulary as the action bins (:meth:`tgrpo.tokenizer.ActionTokenizer.to_vocab_ids`: action token
``k`` is id ``V - 1 - k``).

* **Sampling** (:meth:`HFVLAPolicy.sample`): 7 autoregressive steps; at each step the logits are restricted
  to the 256 action ids, divided by the temperature and sampled. With ``use_cache=True`` the prompt is encoded
  once and each step reuses the KV cache (rows that share a prompt length are decoded together); with
  ``use_cache=False`` each step is a full forward of prompt + tokens so far. OpenVLA's own forward takes a
  cached step at batch size 1 only, so its preset sends the decoding steps straight to its ``language_model``
  (:data:`OPENVLA_PRESET`). ``static_cache`` decodes on a preallocated cache with fixed shapes, which
  ``compile_decoding`` and ``compile_prefill`` make CUDA graphs of on a GPU (:mod:`tgrpo.policies.hf_decoding`).
* **Log-probs** (:meth:`HFVLAPolicy.log_probs`): one teacher-forced forward of prompt + the 7 tokens, in
  micro-batches of ``micro_batch_size`` rows; the logits at the 7 positions that predict the action tokens
  are restricted to the action ids, exactly as at sampling.
* **Reference** (:meth:`HFVLAPolicy.ref_log_probs`): the policy the KL term pulls towards. With a fresh
  adapter (B = 0) it is the base model (``peft``'s ``disable_adapter()``; no copy of anything), which is right
  when the base checkpoint is itself the SFT policy (``openvla/openvla-7b-finetuned-libero-object``). After
  SFT of the adapter (:meth:`HFVLAPolicy.reset_reference`), or when a trained adapter is loaded, it is a frozen
  copy of that adapter, kept as a second peft adapter named :data:`REFERENCE_ADAPTER` (a few hundred MB for
  a 7B model at r=32, never a second copy of the base weights). :attr:`HFVLAPolicy.reference` says which.
* **Old log-probs** (``recompute_old_log_probs``): by default :meth:`HFVLAPolicy.sample` returns the log-probs
  of its own decoding pass (KV cache, eval mode), which differ from the update's teacher-forced forward by
  rounding (up to 0.10 nats in bf16 on an H200); with ``recompute_old_log_probs=True`` the update's forward
  recomputes them (one more forward per sampled batch): the importance ratio is exactly 1 at the first update.
* **Files**: :meth:`HFVLAPolicy.save_pretrained` writes the adapter(s) in peft's format (safetensors);
  ``state_dict`` holds the adapter weights only. No copy of the base model is ever written.

Batches are right-padded (prompt tokens first, padding last), which is what OpenVLA was trained with and
needs no position-id handling: real tokens never attend to the padding. Models that insert image features
into the sequence (OpenVLA puts its patch embeddings after BOS) return more logits than input ids; the
difference is taken as a constant offset before the text tail.

Model families, LoRA settings and loading helpers live in :mod:`tgrpo.policies.hf_models` (re-exported here).
transformers and peft are imported only inside these modules' functions (``pip install libero-tgrpo[hf]``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tgrpo.policies.common import (
    camera_images,
    check_instructions,
    check_tokens,
    sample_from_logits,
    token_stats,
)
from tgrpo.policies.hf_decoding import StaticDecoder
from tgrpo.policies.hf_merge import MergedWeights
from tgrpo.policies.hf_models import (  # noqa: F401 (re-exported: the public names of this module's API)
    DTYPES,
    HF_RECOMMENDED_LR,
    OPENVLA_EMPTY_TOKEN_ID,
    OPENVLA_PRESET,
    OPENVLA_PROMPT,
    REFERENCE_ADAPTER,
    REFERENCE_PREFIX,
    TEXT_ALIGNED_KEYS,
    HFLoadError,
    LoRASettings,
    ModelPreset,
    all_linear_targets,
    auto_model_class,
    check_model_path,
    image_token_of,
    load_failure,
    load_model_and_processor,
    model_preset,
    openvla_action_transform,
    openvla_prompt,
    resolve_dtype,
    resolve_unnorm_key,
)
from tgrpo.policy import Observation
from tgrpo.tokenizer import ACTION_DIM, N_BINS, ActionTokenizer, resolve_tokenizer


class HFVLAPolicy(nn.Module):
    """A Hugging Face vision-to-text model with OpenVLA's action tokens, trained through a LoRA adapter.

    Implements :class:`tgrpo.policy.TokenActionPolicy`. Build it with :meth:`from_pretrained`; the
    constructor wraps an already loaded model and processor.

    Args:
        model: a transformers model (forward takes ``input_ids``, ``attention_mask``, ``pixel_values`` and
            returns ``logits``), or a ``peft.PeftModel`` that already holds the adapter to train.
        processor: its processor; called as ``processor(text=[...], images=[PIL images], return_tensors="pt",
            padding=True)`` and returning ``input_ids``, ``attention_mask`` and ``pixel_values``.
        lora: adapter to add (ignored when ``model`` is already a ``PeftModel``).
        image_key: observation key of the camera image ([B, H, W, 3] uint8) in dict observations; array
            observations are taken as the images themselves.
        prompt_template: prompt with an ``{instruction}`` field (instructions are lower-cased). When the
            processor has an ``image_token`` (LLaVA-style processors), or the model config an
            ``image_token_index`` (LLaVA under transformers 4.x), that the template lacks, it is prepended
            followed by a newline; OpenVLA has neither (the model inserts the image after BOS itself).
        extra_prompt_ids: ids appended after the prompt, before the action tokens, unless the tokenised prompt
            already ends with them (as OpenVLA's ``predict_action`` does with 29871). None: the model's preset
            (:func:`model_preset`: OpenVLA's empty token 29871 for OpenVLA, nothing otherwise).
        action_vocab_size: the V of the action ids ``V - n_bins .. V - 1``; None: ``tokenizer.vocab_size`` (the
            base vocabulary without added tokens; 32000 for OpenVLA, whose logits have 32064 entries).
        micro_batch_size: rows per forward in :meth:`log_probs`, :meth:`ref_log_probs` and :meth:`sample`.
        gradient_checkpointing: recompute activations in the backward pass (``gradient_checkpointing_enable``)
            to fit a 7B model's update in memory.
        use_cache: KV cache while sampling; None: the model's preset (on). Rows are decoded in groups of equal
            prompt length, so the cache needs no padding.
        action_dim: tokens per action (7).
        n_bins: action bins (256).
        tokenizer: action tokenizer; default OpenVLA's convention over [-1, 1].
        recommended_lr: learning rate used when ``TGRPOConfig.lr`` is None (the paper's 1e-5).
        action_transform: applied by :meth:`tokens_to_actions` to the decoded [B, 7] actions (e.g.
            :func:`openvla_action_transform`); None returns the bin centres in [-1, 1].
        mirror_images: flip camera images left-right before the processor. ``libero_gym`` gives true
            (upright) camera views; OpenVLA's LIBERO data and evaluation rotate robosuite's raw images by 180
            degrees, which is the upright view mirrored left-right. None: the model's preset (on for
            OpenVLA, off otherwise).
        static_cache: decode the action's tokens on a preallocated KV cache (:class:`StaticDecoder`), so that
            each decoding step has the same shapes; needs ``use_cache``.
        compile_decoding: also run each decoding step through ``torch.compile`` (CUDA graphs on a GPU; implies
            ``static_cache``). The first call of each batch size and prompt length compiles.
        compile_prefill: also compile the prompt's forward, which then writes straight into the static cache
            (transformers 5.x, LLaVA-style models; implies ``static_cache``).
        merged_sampling: sample on a merged copy of the adapted base weights (:class:`MergedWeights`): no
            adapter kernels in the sampling forwards, merged again only after the adapter changed.
        recompute_old_log_probs: :meth:`sample` returns log-probs recomputed with the update's forward (the
            teacher-forced pass of :meth:`log_probs`, same micro-batches, same train/eval mode) instead of
            those of its decoding pass, so that the importance ratio is exactly 1 at the first update on the
            sampled batch (per-step schedule). Costs one more forward per sampled batch. Off by default: the
            decoding pass's log-probs differ from the update's by rounding only (up to 0.10 nats in bf16).

    Raises:
        ValueError: if the tokenizer's ``n_bins`` differs from ``n_bins`` or the vocabulary is too small.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        lora: LoRASettings | None = None,
        image_key: str = "agentview",
        prompt_template: str = OPENVLA_PROMPT,
        extra_prompt_ids: Sequence[int] | None = None,
        action_vocab_size: int | None = None,
        micro_batch_size: int = 8,
        gradient_checkpointing: bool = False,
        use_cache: bool | None = None,
        action_dim: int = ACTION_DIM,
        n_bins: int = N_BINS,
        tokenizer: ActionTokenizer | None = None,
        recommended_lr: float = HF_RECOMMENDED_LR,
        action_transform: Callable[[np.ndarray], np.ndarray] | None = None,
        mirror_images: bool | None = None,
        recompute_old_log_probs: bool = False,
        static_cache: bool = False,
        compile_decoding: bool = False,
        compile_prefill: bool = False,
        merged_sampling: bool = False,
    ) -> None:
        super().__init__()
        from peft import PeftModel, get_peft_model

        if "{instruction}" not in prompt_template:
            raise ValueError(f"prompt_template={prompt_template!r} must contain an '{{instruction}}' field.")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size={micro_batch_size} must be a positive integer.")
        self.action_dim = int(action_dim)
        self.n_bins = int(n_bins)
        self.tokenizer = resolve_tokenizer(tokenizer, self.n_bins)
        self.recommended_lr = float(recommended_lr)
        self.action_transform = action_transform
        self.processor = processor
        text_tok = getattr(processor, "tokenizer", processor)
        if hasattr(text_tok, "padding_side"):
            text_tok.padding_side = "right"
        self.pad_id = int(text_tok.pad_token_id if text_tok.pad_token_id is not None else 0)
        self.vocab_size = int(action_vocab_size if action_vocab_size is not None else text_tok.vocab_size)
        if self.vocab_size < self.n_bins:
            raise ValueError(f"action_vocab_size={self.vocab_size} is smaller than n_bins={self.n_bins}.")
        preset = model_preset(model.config)
        if extra_prompt_ids is None:
            extra_prompt_ids = preset.extra_prompt_ids
        self.extra_prompt_ids = tuple(int(i) for i in extra_prompt_ids)
        image_token = image_token_of(processor, text_tok, model.config)
        if image_token is not None and image_token not in prompt_template:
            prompt_template = f"{image_token}\n{prompt_template}"
        self.prompt_template = prompt_template
        self.image_key = image_key
        self.micro_batch_size = int(micro_batch_size)
        self.use_cache = preset.use_cache if use_cache is None else bool(use_cache)
        self.decoder_attr = preset.decoder_attr
        self.mirror_images = preset.mirror_images if mirror_images is None else bool(mirror_images)
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.recompute_old_log_probs = bool(recompute_old_log_probs)

        if isinstance(model, PeftModel):
            self.model = model
            adapters = set(model.peft_config)
            if adapters - {"default", REFERENCE_ADAPTER} or "default" not in adapters:
                raise ValueError(
                    f"the PeftModel holds the adapters {sorted(adapters)}; HFVLAPolicy trains the one named "
                    f"'default' and keeps its frozen reference as {REFERENCE_ADAPTER!r}, nothing else."
                )
        else:
            model.requires_grad_(False)
            self.model = get_peft_model(model, (lora or LoRASettings()).to_peft(model))
        if REFERENCE_ADAPTER in self.model.peft_config:
            self._freeze_reference_adapter()
        elif isinstance(model, PeftModel):
            # A trained adapter was handed over (an SFT LoRA): the policy it defines is the reference, not the
            # base model under it.
            self.reset_reference()
        if self.gradient_checkpointing:
            base, kwargs = self.model.get_base_model(), {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        self.model.eval()
        self.set_decoding(static_cache=static_cache, compile_decoding=compile_decoding,
                          compile_prefill=compile_prefill, merged_sampling=merged_sampling)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        *,
        trust_remote_code: bool = False,
        dtype: str | torch.dtype = "bfloat16",
        device: str | torch.device | None = None,
        attn_implementation: str | None = None,
        adapter_path: str | os.PathLike | None = None,
        processor_path: str | os.PathLike | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        unnorm_key: str | None = None,
        **kwargs: Any,
    ) -> HFVLAPolicy:
        """Load a model and its processor with ``from_pretrained`` and wrap them.

        Args:
            path: local directory written by ``save_pretrained``, or a Hub id (``"openvla/openvla-7b"``).
            trust_remote_code: run the model's own code (OpenVLA needs it).
            dtype: ``"bfloat16"`` (default; what a 7B model needs on one GPU), ``"float16"``, ``"float32"``,
                ``"auto"`` or a ``torch.dtype``. LoRA weights stay float32.
            device: where to put the model (``"cuda"``, ``"cpu"``, ...); None leaves it where it loads (CPU).
            attn_implementation: e.g. ``"sdpa"`` or ``"flash_attention_2"``; None: transformers' default.
            adapter_path: a saved peft adapter to continue training (e.g. an SFT LoRA); None adds a fresh
                adapter from ``lora``. When it holds a ``reference/`` adapter (written by :meth:`save_pretrained`
                after :meth:`reset_reference`), that is the KL reference; otherwise the loaded adapter itself is
                (the SFT adapter a run starts from).
            processor_path: where the processor lives when it is not beside the model.
            model_kwargs: other keyword arguments of the model's ``from_pretrained``.
            unnorm_key: for OpenVLA checkpoints, the dataset whose action statistics
                (``model.norm_stats[unnorm_key]``) un-normalise the actions, e.g. ``"libero_object"``; sets
                ``action_transform=openvla_action_transform(...)``. None: the only entry of ``norm_stats`` when
                there is exactly one (as OpenVLA's ``predict_action``), an error when there are several, no
                un-normalisation for a model without ``norm_stats``. An ``action_transform`` argument wins.
            **kwargs: constructor arguments (``lora``, ``micro_batch_size``, ``gradient_checkpointing``, ...).

        Raises:
            HFLoadError: (a ``ValueError``) when the model, its processor or the adapter cannot be loaded (a
                missing directory, missing files, an unreachable Hub id, code that needs ``trust_remote_code``);
                one line naming the path and what was tried.
            ValueError: on an unknown dtype, an ``unnorm_key`` the model has no statistics for, or no
                ``unnorm_key`` for a model with statistics of several datasets (:func:`resolve_unnorm_key`).
        """
        model, processor = load_model_and_processor(
            path, trust_remote_code=trust_remote_code, dtype=dtype, device=device,
            attn_implementation=attn_implementation, adapter_path=adapter_path, processor_path=processor_path,
            model_kwargs=model_kwargs,
        )
        stats = getattr(model, "norm_stats", None) or getattr(model.config, "norm_stats", None) or {}
        if "action_transform" not in kwargs and (unnorm_key is not None or stats):
            key = resolve_unnorm_key(stats, unnorm_key)
            kwargs["action_transform"] = openvla_action_transform(stats[key]["action"])
        return cls(model, processor, **kwargs)

    # ---------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return next(p for p in self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def _images(self, obs: Observation) -> np.ndarray:
        return camera_images(obs, self.image_key, self.mirror_images)

    def _encode(
        self, obs: Observation, instructions: Sequence[str]
    ) -> tuple[list[list[int]], dict[str, torch.Tensor]]:
        """Prompt ids per row (real tokens only, plus ``extra_prompt_ids``) and the per-row image tensors."""
        from PIL import Image

        images = self._images(obs)
        instr = check_instructions(instructions, images.shape[0])
        texts = [openvla_prompt(s, self.prompt_template) for s in instr]
        batch = self.processor(
            text=texts, images=[Image.fromarray(im) for im in images], return_tensors="pt", padding=True
        )
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()
        prompts = [self._with_extra_ids(row[m].tolist()) for row, m in zip(ids, mask)]
        b = len(prompts)
        extras = {
            k: v
            for k, v in batch.items()
            if k not in TEXT_ALIGNED_KEYS
            and isinstance(v, torch.Tensor)
            and v.shape[:1] == (b,)
        }
        if "pixel_values" not in extras:
            raise ValueError(
                f"the processor returned {sorted(batch)}; HFVLAPolicy needs per-row 'pixel_values' [B, C, H, W]."
            )
        return prompts, extras

    def _with_extra_ids(self, prompt: list[int]) -> list[int]:
        """``prompt`` followed by ``extra_prompt_ids``, unless it already ends with them (OpenVLA's
        ``predict_action`` appends 29871 only when the last id is not 29871)."""
        extra = list(self.extra_prompt_ids)
        if extra and prompt[-len(extra) :] == extra:
            return prompt
        return prompt + extra

    def _forward(
        self, seqs: list[list[int]], extras: dict[str, torch.Tensor], rows: Sequence[int], call: Any = None, **kw: Any
    ) -> Any:
        """Forward right-padded ``rows`` with their images through ``call`` (default: the model; ``kw`` may replace
        the padding ``attention_mask``); returns what it returns."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s)
            att[i, : len(s)] = 1
        dev, idx = self.device, torch.as_tensor(list(rows))
        inputs = {
            k: v[idx].to(dev, self.dtype if v.is_floating_point() else v.dtype) for k, v in extras.items()
        }
        kw.setdefault("attention_mask", att.to(dev))
        return (call or self.model)(input_ids=ids.to(dev), **inputs, **kw)

    def _action_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., V'] model logits -> [..., n_bins] float32 logits indexed by action token (id V - 1 - k)."""
        if logits.shape[-1] < self.vocab_size:
            raise ValueError(
                f"the model returns {logits.shape[-1]} logits but action_vocab_size={self.vocab_size}; pass the "
                "right action_vocab_size."
            )
        return logits[..., self.tokenizer.vocab_slice(self.vocab_size)].float().flip(-1)

    def _teacher_forced_logits(
        self,
        prompts: list[list[int]],
        extras: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        rows: Sequence[int],
    ) -> torch.Tensor:
        """[b, D, n_bins] action logits at the positions that predict ``tokens`` of ``rows``."""
        ids = self.tokenizer.to_vocab_ids(tokens[list(rows)].cpu(), self.vocab_size).tolist()
        seqs = [prompts[r] + a for r, a in zip(rows, ids)]
        logits = self._forward(seqs, extras, rows, use_cache=False).logits
        offset = logits.shape[1] - max(len(s) for s in seqs)
        pos = torch.as_tensor(
            [[offset + len(prompts[r]) - 1 + j for j in range(self.action_dim)] for r in rows]
        )
        pos = pos.to(logits.device)
        picked = logits.gather(1, pos.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))
        return self._action_logits(picked)

    def _chunks(self, n: int) -> list[list[int]]:
        return [list(range(s, min(s + self.micro_batch_size, n))) for s in range(0, n, self.micro_batch_size)]

    # ---------------------------------------------------------------- protocol
    def sample(
        self, obs: Observation, instructions: Sequence[str], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample 7 action tokens per row autoregressively, logits restricted to the action ids.

        Returns:
            tokens [B, 7] int64 in ``0 .. n_bins - 1`` and their log-probs [B, 7] (no grad, on the CPU).
        """
        prompts, extras = self._encode(obs, instructions)
        b = len(prompts)
        tokens = torch.zeros((b, self.action_dim), dtype=torch.long)
        logp = torch.zeros((b, self.action_dim), dtype=torch.float32)
        self.model.eval()
        merged = self._merged.active() if self._merged is not None else contextlib.nullcontext()
        with torch.no_grad(), merged:
            groups: dict[int, list[int]] = {}
            for r, p in enumerate(prompts):
                groups.setdefault(len(p) if self.use_cache else 0, []).append(r)
            decode = self._sample_cached if self.use_cache else self._sample_full
            for group in groups.values():
                for s in range(0, len(group), self.micro_batch_size):
                    rows = group[s : s + self.micro_batch_size]
                    tk, lp = decode([list(prompts[r]) for r in rows], extras, rows, temperature)
                    tokens[rows], logp[rows] = tk.cpu(), lp.cpu().float()
        with torch.no_grad():
            if self.recompute_old_log_probs and temperature > 0:
                # the update's forward: same micro-batches, same train/eval mode as log_probs under grad
                logp = self._log_probs(prompts, extras, tokens, temperature, train=self.gradient_checkpointing)[0]
                logp = logp.cpu().float()
        return tokens, logp

    def _sample_cached(
        self, seqs: list[list[int]], extras: dict[str, torch.Tensor], rows: list[int], temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoding with the KV cache: one forward of the prompts, then one of each new token. The rows share
        one prompt length (no padding), so the cache stays aligned."""
        static, length, past = self._static, len(seqs[0]), None
        if static is not None and static.prefills:  # the prompt's forward fills the static cache itself
            run = partial(self._forward, seqs, extras, rows)
            last = static.prefill(run, len(rows), length, length + self.action_dim - 1)
        else:
            out = self._forward(seqs, extras, rows, use_cache=True)
            past, last, length = out.past_key_values, out.logits[:, -1], out.logits.shape[1]
            if static is not None:
                static.start(past, length + self.action_dim - 1)
                past = out = None  # the prompt's dynamic cache is copied; free it
        try:
            return self._decode(last, past, length, rows, temperature, static)
        finally:
            if static is not None:
                static.finish()

    def _decode(
        self, last: torch.Tensor, past: Any, length: int, rows: list[int], temperature: float,
        static: StaticDecoder | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The 7 tokens from the prompt's last logits, one cached decoding step per token after the first."""
        out_tok, out_lp = [], []
        for j in range(self.action_dim):
            tk, lp = sample_from_logits(self._action_logits(last), temperature)
            out_tok.append(tk)
            out_lp.append(lp)
            if j == self.action_dim - 1:
                break
            ids = self.tokenizer.to_vocab_ids(tk, self.vocab_size)
            if static is not None:
                last = static.step(ids, length)
            else:
                att = torch.ones((len(rows), length + 1), dtype=torch.long, device=ids.device)
                out = self._decoder()(input_ids=ids[:, None], attention_mask=att, past_key_values=past, use_cache=True)
                past, last = out.past_key_values, out.logits[:, -1]
            length += 1
        return torch.stack(out_tok, 1), torch.stack(out_lp, 1)

    def set_decoding(
        self, *, static_cache: bool = False, compile_decoding: bool = False, compile_prefill: bool = False,
        merged_sampling: bool = False,
    ) -> None:
        """Choose how :meth:`sample` decodes with the KV cache: the dynamic cache (default) or a static one
        (:class:`StaticDecoder`, also with a compiled step and/or prompt forward), with or without the adapter
        merged in (:class:`MergedWeights`); all give the same tokens and log-probs, up to rounding.

        Raises:
            ValueError: for a static cache without ``use_cache``, or a model that cannot decode as asked.
        """
        flags = {"static_cache": static_cache, "compile_decoding": compile_decoding, "compile_prefill": compile_prefill}
        static = any(flags.values())
        if static and not self.use_cache:
            raise ValueError(f"{flags} need the KV cache; they do not go with use_cache=False.")
        self._static = StaticDecoder(self._decoder(), compile=bool(compile_decoding), model=self.model,
                                     compile_prefill=bool(compile_prefill)) if static else None
        self.static_cache = static
        self.compile_decoding, self.compile_prefill = bool(compile_decoding), bool(compile_prefill)
        self._merged = None  # the merged copies of an earlier call are freed before new ones are made
        self._merged = MergedWeights(self.model) if merged_sampling else None
        self.merged_sampling = bool(merged_sampling)

    def _decoder(self) -> Any:
        """The module that takes a cached decoding step: the (peft-wrapped) model, or its preset's submodule
        (OpenVLA: ``language_model``), whose layers carry the same LoRA adapter."""
        if self.decoder_attr is None:
            return self.model
        return getattr(self.model.get_base_model(), self.decoder_attr)

    def _sample_full(
        self, seqs: list[list[int]], extras: dict[str, torch.Tensor], rows: list[int], temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoding without a cache: each step is a full forward of the (right-padded) prompts and the tokens
        so far."""
        out_tok, out_lp = [], []
        for j in range(self.action_dim):
            logits = self._forward(seqs, extras, rows, use_cache=False).logits
            offset = logits.shape[1] - max(len(s) for s in seqs)
            pos = torch.as_tensor([offset + len(s) - 1 for s in seqs], device=logits.device)
            last = logits[torch.arange(len(rows), device=logits.device), pos]
            tk, lp = sample_from_logits(self._action_logits(last), temperature)
            out_tok.append(tk)
            out_lp.append(lp)
            if j == self.action_dim - 1:
                break
            ids = self.tokenizer.to_vocab_ids(tk, self.vocab_size)
            seqs = [s + [int(i)] for s, i in zip(seqs, ids)]
        return torch.stack(out_tok, 1), torch.stack(out_lp, 1)

    def log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable log-probs [B, 7] and entropies [B, 7] of ``tokens``, recomputed in micro-batches.

        Note: the graph of every micro-batch is kept until the caller's ``backward``; micro-batches bound the
        peak of each forward (the [b, T, V] logits), gradient checkpointing bounds the stored activations.
        """
        prompts, extras = self._encode(obs, instructions)
        tokens = check_tokens(tokens, len(prompts), self.action_dim, self.n_bins)
        return self._log_probs(
            prompts, extras, tokens, temperature, train=self.gradient_checkpointing and torch.is_grad_enabled()
        )

    def _log_probs(
        self,
        prompts: list[list[int]],
        extras: dict[str, torch.Tensor],
        tokens: torch.Tensor,
        temperature: float,
        train: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs and entropies of encoded prompts, in micro-batches."""
        self.model.train(train)
        lps, ents = [], []
        try:
            for rows in self._chunks(len(prompts)):
                lp, ent = token_stats(
                    self._teacher_forced_logits(prompts, extras, tokens, rows),
                    tokens[rows].to(self.device),
                    temperature,
                )
                lps.append(lp)
                ents.append(ent)
        finally:
            self.model.eval()
        return torch.cat(lps), torch.cat(ents)

    # ---------------------------------------------------------------- reference
    @property
    def reference(self) -> str:
        """What :meth:`ref_log_probs` evaluates: ``"adapter"`` (the frozen copy made by :meth:`reset_reference`
        or loaded with the adapter) or ``"base"`` (the model with the adapter disabled)."""
        return "adapter" if REFERENCE_ADAPTER in self.model.peft_config else "base"

    def _adapter_params(self, name: str) -> dict[str, nn.Parameter]:
        tag = f".{name}."
        return {n: p for n, p in self.model.named_parameters() if tag in n and "lora_" in n}

    def _freeze_reference_adapter(self) -> None:
        for p in self._adapter_params(REFERENCE_ADAPTER).values():
            p.requires_grad_(False)

    def reset_reference(self) -> None:
        """Make the current policy (base + adapter) the KL reference: copy the trained adapter into a frozen
        adapter named :data:`REFERENCE_ADAPTER` (added on the first call). Called after SFT
        (``libero_tgrpo.sft.freeze_reference``); :meth:`ref_log_probs` then equals the SFT policy's
        log-probs and stays fixed while RL trains the other adapter."""
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        if REFERENCE_ADAPTER not in self.model.peft_config:
            self.model.add_adapter(REFERENCE_ADAPTER, self.model.peft_config["default"])
        live = get_peft_model_state_dict(self.model, adapter_name="default")
        set_peft_model_state_dict(self.model, live, adapter_name=REFERENCE_ADAPTER)
        self._freeze_reference_adapter()
        self._check_reference_copy()

    def _check_reference_copy(self) -> None:
        live = {n.replace(".default.", "."): p for n, p in self._adapter_params("default").items()}
        ref = {n.replace(f".{REFERENCE_ADAPTER}.", "."): p for n, p in self._adapter_params(REFERENCE_ADAPTER).items()}
        if live.keys() != ref.keys() or any(not torch.equal(live[k], ref[k]) for k in live):
            raise RuntimeError("the reference adapter is not an exact copy of the trained adapter.")

    def ref_log_probs(
        self, obs: Observation, instructions: Sequence[str], tokens: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """Log-probs [B, 7] of ``tokens`` under the reference policy (no grad): the frozen reference adapter
        when there is one (after :meth:`reset_reference`), else the base model (the adapter disabled)."""
        with torch.no_grad():
            if self.reference == "base":
                with self.model.disable_adapter():
                    return self.log_probs(obs, instructions, tokens, temperature)[0]
            grads = {n: p.requires_grad for n, p in self.model.named_parameters()}
            active = self.model.active_adapter
            self.model.set_adapter(REFERENCE_ADAPTER)
            try:
                return self.log_probs(obs, instructions, tokens, temperature)[0]
            finally:
                self.model.set_adapter(active)
                for n, p in self.model.named_parameters():  # peft's set_adapter changes requires_grad
                    p.requires_grad_(grads[n])

    def tokens_to_actions(self, tokens: torch.Tensor | np.ndarray) -> np.ndarray:
        """Tokens [B, 7] -> actions [B, 7] float32: bin centres in [-1, 1], then ``action_transform`` if set."""
        actions = self.tokenizer.decode(tokens)
        return actions if self.action_transform is None else self.action_transform(actions.copy())

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The LoRA adapter's parameters (the base model is frozen)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """The adapter weights only (``peft.get_peft_model_state_dict``): checkpoints stay small. The frozen
        reference adapter, when there is one, is included under keys prefixed with :data:`REFERENCE_PREFIX`."""
        from peft import get_peft_model_state_dict

        out = {k: v.detach().cpu() for k, v in get_peft_model_state_dict(self.model).items()}
        if self.reference == "adapter":
            ref = get_peft_model_state_dict(self.model, adapter_name=REFERENCE_ADAPTER)
            out.update({REFERENCE_PREFIX + k: v.detach().cpu() for k, v in ref.items()})
        return out

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:  # type: ignore[override]
        """Restore adapter weights written by :meth:`state_dict` (and the reference adapter they carry).

        Raises:
            ValueError: if the state carries no reference adapter while this policy has one: the policy would
                go on with a reference that belongs to other weights. Load into a policy built from the same
                base without an adapter (``HFVLAPolicy.from_pretrained(path)``) instead.
        """
        from peft import set_peft_model_state_dict

        state = dict(state_dict)
        ref = {k[len(REFERENCE_PREFIX) :]: v for k, v in state.items() if k.startswith(REFERENCE_PREFIX)}
        live = {k: v for k, v in state.items() if not k.startswith(REFERENCE_PREFIX)}
        if not ref and self.reference == "adapter":
            raise ValueError(
                "the adapter state has no reference adapter, but this policy's KL reference is a frozen adapter "
                "(an SFT policy); loading it would keep a reference that belongs to other weights. Build the "
                "policy from the base model alone and load the state into that."
            )
        result = set_peft_model_state_dict(self.model, live)
        if ref:
            if REFERENCE_ADAPTER not in self.model.peft_config:
                self.model.add_adapter(REFERENCE_ADAPTER, self.model.peft_config["default"])
            set_peft_model_state_dict(self.model, ref, adapter_name=REFERENCE_ADAPTER)
            self._freeze_reference_adapter()
        return result

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write the trained adapter in peft's format (``adapter_config.json`` + ``adapter_model.safetensors``)
        and, when there is one, the reference adapter in ``path/reference/``. Only adapter weights are
        written. ``peft.PeftModel.from_pretrained(base, path)`` loads the trained adapter;
        ``HFVLAPolicy.from_pretrained(base, adapter_path=path)`` restores both."""
        self.model.save_pretrained(str(path), safe_serialization=True)
        return Path(path)

    def save_adapter(self, path: str | os.PathLike) -> Path:
        """Alias of :meth:`save_pretrained`."""
        return self.save_pretrained(path)
