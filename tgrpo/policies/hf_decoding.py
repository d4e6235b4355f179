"""Cached decoding of the action tokens with a static KV cache, optionally through a compiled step.

:class:`HFVLAPolicy` samples an action as one forward of the prompt (image and text) and six one-token decoding
steps. With transformers' dynamic cache each step grows the cache, so its shapes change from step to step and
every step is a fresh eager forward: on a 7B decoder that is dozens of small kernel launches per layer, which
dominate the step's time on a GPU. :class:`StaticDecoder` copies the prompt's keys and values into a
preallocated ``transformers.StaticCache`` sized for the prompt plus the action, so that every decoding step has
the same shapes and reads and writes the same buffers; with ``compile=True`` the step goes through
``torch.compile`` (``mode="reduce-overhead"`` on CUDA, which replays it as a CUDA graph).

The cache is kept between calls while the batch size and length stay the same (one task's instruction gives one
prompt length), because a CUDA graph replays on the buffers it was recorded with. It holds
``2 * layers * batch * kv_heads * length * head_dim`` numbers: about 1.3 GB for a 7B Llama decoder at batch 8
and 300 positions in bfloat16.

Supported transformers lines: 4.40 (``StaticCache(config, max_batch_size, max_cache_len, device, dtype)`` and
an explicit ``cache_position``) and 5.x (the cache lays itself out on its first write and tracks its own
length).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

__all__ = ["StaticDecoder"]


def _layers_kv(past: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) [B, heads, T, head_dim] per layer of a prompt forward's cache, in any of transformers'
    layouts: ``Cache.layers`` (5.x), ``key_cache``/``value_cache`` lists (4.x ``DynamicCache``) or the legacy
    tuple of (key, value) pairs."""
    if hasattr(past, "layers"):
        return [(layer.keys, layer.values) for layer in past.layers]
    if hasattr(past, "key_cache"):
        return list(zip(past.key_cache, past.value_cache))
    if isinstance(past, (tuple, list)) and all(isinstance(kv, (tuple, list)) and len(kv) >= 2 for kv in past):
        return [(kv[0], kv[1]) for kv in past]
    raise TypeError(f"cannot read the keys and values of a {type(past).__name__} cache.")


def _text_config(config: Any) -> Any:
    """The decoder's config (a VLM config holds it as ``text_config``)."""
    if hasattr(config, "get_text_config"):
        return config.get_text_config(decoder=True) if "decoder" in inspect.signature(
            config.get_text_config
        ).parameters else config.get_text_config()
    return getattr(config, "text_config", config)


class StaticDecoder:
    """One-token decoding steps on a static KV cache filled from a prompt forward's cache.

    Args:
        decoder: the module that takes a decoding step (``input_ids`` [B, 1], ``past_key_values``,
            ``position_ids``, ``use_cache``; ``cache_position`` where its forward has it) and returns ``logits``.
        compile: run the step through ``torch.compile`` (``mode="reduce-overhead"``, CUDA graphs, on CUDA; the
            default mode elsewhere). The first step of each batch size compiles (seconds to a minute); later
            calls replay.
    """

    def __init__(self, decoder: Any, *, compile: bool = False) -> None:
        from transformers import StaticCache

        self.decoder = decoder
        self.compile = bool(compile)
        self._cache_cls = StaticCache
        self._explicit_layout = "max_batch_size" in inspect.signature(StaticCache.__init__).parameters
        inner = decoder.get_base_model() if hasattr(decoder, "get_base_model") else decoder  # under peft's wrapper
        self._takes_cache_position = "cache_position" in inspect.signature(inner.forward).parameters
        if self._explicit_layout and not self._takes_cache_position:
            raise ValueError(
                f"static_cache: {type(inner).__name__}.forward takes no cache_position, which a static cache needs "
                "under this transformers version; use the dynamic cache (static_cache=False, compile_decoding=False)."
            )
        self._inner = inner
        self._cache: Any = None  # a Cache object, or (transformers 4.40) a list of one StaticCache per layer
        self._mask: torch.Tensor | None = None
        self._shape: tuple[Any, ...] | None = None
        self._step = self._eager_step
        self._compiled: dict[str, Any] = {}

    def _attention_layers(self) -> list[Any]:
        """The attention modules of the decoder, in layer order (for the per-layer caches of transformers 4.40)."""
        model = getattr(self._inner, "model", self._inner)
        layers = getattr(model, "layers", None)
        if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
            raise ValueError(
                f"static_cache: cannot find the attention layers of {type(self._inner).__name__} "
                "(expected model.layers[i].self_attn); use the dynamic cache."
            )
        return [layer.self_attn for layer in layers]

    def _allocate(self, batch: int, max_len: int, dtype: torch.dtype, device: torch.device, n_layers: int) -> Any:
        config = _text_config(self.decoder.config)
        if not self._explicit_layout:  # transformers 5: one cache object, laid out on its first write
            return self._cache_cls(config=config, max_cache_len=max_len)
        probe = self._cache_cls(config=config, max_batch_size=batch, max_cache_len=max_len, device=device, dtype=dtype)
        if isinstance(getattr(probe, "key_cache", None), list):  # one object holding every layer
            return probe
        # transformers 4.40: a StaticCache holds one layer; the model reads it from each attention module's
        # ``past_key_value`` attribute, set only while decoding (see :meth:`finish`)
        return [probe] + [
            self._cache_cls(config=config, max_batch_size=batch, max_cache_len=max_len, device=device, dtype=dtype)
            for _ in range(n_layers - 1)
        ]

    def start(self, past: Any, max_len: int) -> int:
        """Copy a prompt forward's cache into the static cache (allocated, or reset and reused when the batch,
        length, dtype and device are those of the last call) and return the prompt's length. Call
        :meth:`finish` after the last step."""
        kv = _layers_kv(past)
        keys = kv[0][0]
        batch, prompt_len = int(keys.shape[0]), int(keys.shape[-2])
        if prompt_len >= max_len:
            raise ValueError(f"max_len={max_len} leaves no room after the prompt's {prompt_len} positions.")
        shape = (batch, max_len, keys.dtype, keys.device, len(kv))
        if self._cache is None or shape != self._shape:
            self._cache = None  # free the old buffers first
            self._cache = self._allocate(batch, max_len, keys.dtype, keys.device, len(kv))
            self._shape = shape
        elif isinstance(self._cache, list):
            for cache in self._cache:
                cache.key_cache.zero_()
                cache.value_cache.zero_()
        else:
            self._cache.reset()
        positions = torch.arange(prompt_len, device=keys.device)
        if isinstance(self._cache, list):
            for i, ((k, v), cache, attn) in enumerate(zip(kv, self._cache, self._attention_layers())):
                cache.update(k, v, i, {"cache_position": positions})
                attn.past_key_value = cache
        else:
            for i, (k, v) in enumerate(kv):
                self._cache.update(k, v, i, {"cache_position": positions})
        # which of the cache's slots hold a token: without it, attention would also weigh the empty slots (zero
        # keys) where the transformers version sizes the causal mask from the tokens seen rather than the cache
        self._mask = torch.zeros((batch, max_len), dtype=torch.long, device=keys.device)
        self._mask[:, :prompt_len] = 1
        if self.compile:
            self._step = self._compiled_step(keys.device)
        return prompt_len

    def finish(self) -> None:
        """End a decoding: detach the per-layer caches of transformers 4.40 from the attention modules, so that
        the other forwards (training, log-probs, the next prompt) run as without them. The buffers stay for
        the next call."""
        if isinstance(self._cache, list):
            for attn in self._attention_layers():
                if "past_key_value" in vars(attn):
                    del attn.past_key_value

    def step(self, ids: torch.Tensor, position: int) -> torch.Tensor:
        """Logits [B, V] after feeding ``ids`` [B] at cache position ``position`` (the prompt's length for the
        first new token, then one more per step)."""
        if self._cache is None or self._mask is None:
            raise RuntimeError("call start() with a prompt forward's cache before decoding steps.")
        if not 0 <= position < self._mask.shape[1]:
            raise ValueError(f"position={position} is outside the static cache's {self._mask.shape[1]} slots.")
        self._mask[:, position] = 1
        pos = torch.full((1,), int(position), dtype=torch.long, device=ids.device)
        cache = None if isinstance(self._cache, list) else self._cache  # 4.40: read from the attention modules
        return self._step(ids[:, None], pos, self._mask, cache)

    def _eager_step(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        kw: dict[str, Any] = {"cache_position": pos} if self._takes_cache_position else {}
        out = self.decoder(
            input_ids=ids, attention_mask=mask, past_key_values=cache,
            position_ids=pos[None].expand(ids.shape[0], -1), use_cache=True, **kw,
        )
        return out.logits[:, -1]

    def _compiled_step(self, device: torch.device) -> Any:
        mode = "reduce-overhead" if device.type == "cuda" else "default"
        if mode not in self._compiled:
            self._compiled[mode] = torch.compile(self._eager_step, mode=mode, dynamic=False)
        return self._compiled[mode]
