"""Cached decoding of the action tokens with a static KV cache, optionally through a compiled step.

:class:`HFVLAPolicy` samples an action as one forward of the prompt (image and text) and six one-token decoding
steps. With transformers' dynamic cache each step grows the cache, so its shapes change from step to step and
every step is a fresh eager forward: on a 7B decoder that is dozens of small kernel launches per layer, which
dominate the step's time on a GPU. :class:`StaticDecoder` copies the prompt's keys and values into a
preallocated ``transformers.StaticCache`` sized for the prompt plus the action, so that every decoding step has
the same shapes and reads and writes the same buffers; with ``compile=True`` the step goes through
``torch.compile`` (``mode="reduce-overhead"`` on CUDA, which replays it as a CUDA graph).

Under transformers 5.x, for a model whose forward takes ``logits_to_keep`` (LLaVA-style models), the prompt's
forward writes straight into the static cache (:meth:`StaticDecoder.prefill`: no dynamic cache to copy, and only
the last position's logits), and with ``compile_prefill=True`` that forward is compiled too (one graph per batch
size and prompt length). Elsewhere (transformers 4.40, OpenVLA's layout) the prompt runs on the dynamic cache and
:meth:`StaticDecoder.start` copies it in.

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


def _mode(device: torch.device) -> str:
    """``torch.compile``'s mode on ``device``: CUDA graphs on CUDA, the default elsewhere."""
    return "reduce-overhead" if device.type == "cuda" else "default"


class StaticDecoder:
    """One-token decoding steps on a static KV cache filled from a prompt forward's cache.

    Args:
        decoder: the module that takes a decoding step (``input_ids`` [B, 1], ``past_key_values``,
            ``position_ids``, ``use_cache``; ``cache_position`` where its forward has it) and returns ``logits``.
        compile: run the step through ``torch.compile`` (``mode="reduce-overhead"``, CUDA graphs, on CUDA; the
            default mode elsewhere). The first step of each batch size compiles (seconds to a minute); later
            calls replay.
        model: the whole model that takes the prompt (images and text); with it, :meth:`prefill` is available
            where :attr:`prefills`.
        compile_prefill: compile the prompt's forward as the step is (one graph per batch size and prompt length).

    Raises:
        ValueError: for ``compile_prefill`` where the prompt's forward cannot write into the static cache.
    """

    def __init__(
        self, decoder: Any, *, compile: bool = False, model: Any = None, compile_prefill: bool = False
    ) -> None:
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
                "under this transformers version; use the dynamic cache (static_cache=False, compile_decoding=False, "
                "compile_prefill=False)."
            )
        self._inner = inner
        # the models under peft's wrapper, whose forward only passes the call on (and breaks a compiled graph); the
        # LoRA layers inside them carry the adapters
        top = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.model = top
        #: whether the prompt's forward writes straight into the static cache (:meth:`prefill`)
        self.prefills = (model is not None and not self._explicit_layout
                         and "logits_to_keep" in inspect.signature(top.forward).parameters)
        if compile_prefill and not self.prefills:
            raise ValueError(
                f"compile_prefill: the prompt's forward of {type(top).__name__} cannot write into a static cache "
                "here (it needs transformers 5.x and a forward that takes logits_to_keep, as LLaVA's does); "
                "use compile_decoding alone."
            )
        self.compile_prefill = bool(compile_prefill)
        self._cache: Any = None  # a Cache object, or (transformers 4.40) a list of one StaticCache per layer
        self._mask: torch.Tensor | None = None
        self._shape: tuple[Any, ...] | None = None
        self._step = self._eager_step
        self._compiled_fns: dict[tuple[str, str], Any] = {}

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

    def _reserve(self, batch: int, prompt_len: int, max_len: int, dtype: torch.dtype, device: torch.device,
                 n_layers: int) -> bool:
        """Allocate the cache and the slot mask, or reset them when batch, length, dtype and device are those of
        the last call (the same buffers: what a CUDA graph replays on); returns whether it allocated."""
        if prompt_len >= max_len:
            raise ValueError(f"max_len={max_len} leaves no room after the prompt's {prompt_len} positions.")
        shape = (batch, max_len, dtype, device, n_layers)
        fresh = self._cache is None or shape != self._shape
        if fresh:
            self._cache = self._mask = None  # free the old buffers first
            self._cache = self._allocate(batch, max_len, dtype, device, n_layers)
            self._mask = torch.zeros((batch, max_len), dtype=torch.long, device=device)
            self._shape = shape
        elif isinstance(self._cache, list):
            for cache in self._cache:
                cache.key_cache.zero_()
                cache.value_cache.zero_()
        else:
            self._cache.reset()
        # which of the cache's slots hold a token, read by the steps of transformers 4.x only: there attention would
        # otherwise also weigh the empty slots (zero keys), as the causal mask is sized from the tokens seen rather
        # than the cache; under transformers 5 the cache's causal mask hides them (the mask's shape still bounds
        # the step's position)
        assert self._mask is not None
        if self._explicit_layout:
            self._mask.zero_()
            self._mask[:, :prompt_len] = 1
        return fresh

    def prefill(self, run: Any, batch: int, prompt_len: int, max_len: int) -> torch.Tensor:
        """The prompt's forward straight into the static cache (where :attr:`prefills`): ``run(call, **kw)`` must
        call ``call`` with the prompt's inputs (``input_ids`` [batch, prompt_len], images) and ``kw`` (the cache, no
        attention mask, ``logits_to_keep=1``) and return what it returns. Returns the last position's logits
        [batch, V]; decoding steps follow from position ``prompt_len``. Call :meth:`finish` after the last step."""
        config = _text_config(self.decoder.config)
        emb = self.model.get_input_embeddings().weight
        fresh = self._reserve(batch, prompt_len, max_len, emb.dtype, emb.device, int(config.num_hidden_layers))
        if fresh:  # laid out now, not on its first write (which would fall inside a compiled graph)
            heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            self._cache.early_initialization(batch, heads, head_dim, emb.dtype, emb.device)
        # no attention mask: under transformers 5 the static cache's causal mask already hides the empty slots
        kw = {"attention_mask": None, "past_key_values": self._cache, "use_cache": True, "logits_to_keep": 1}
        if self.compile_prefill and ("_prefill_call", _mode(emb.device)) not in self._compiled_fns:
            # one eager forward first: transformers installs the model's output-capturing hooks on the first
            # forward that asks for hidden states (LLaVA's vision tower does), which traced would break the graph
            run(self._prefill_call, **kw)
            self._cache.reset()
        call = self._compiled("_prefill_call", emb.device) if self.compile_prefill else self._prefill_call
        last = run(call, **kw)
        if fresh and int(self._cache.get_seq_length()) != prompt_len:
            raise ValueError(
                f"the prompt's forward wrote {int(self._cache.get_seq_length())} cache positions for "
                f"{prompt_len} input ids (a model that inserts positions of its own); use compile_decoding alone."
            )
        if self.compile:
            self._step = self._compiled("_eager_step", emb.device)
        return last

    def _prefill_call(self, **kw: Any) -> torch.Tensor:
        return self.model(**kw).logits[:, -1]

    def start(self, past: Any, max_len: int) -> int:
        """Copy a prompt forward's cache into the static cache (allocated, or reset and reused when the batch,
        length, dtype and device are those of the last call) and return the prompt's length. Call
        :meth:`finish` after the last step."""
        kv = _layers_kv(past)
        keys = kv[0][0]
        batch, prompt_len = int(keys.shape[0]), int(keys.shape[-2])
        self._reserve(batch, prompt_len, max_len, keys.dtype, keys.device, len(kv))
        positions = torch.arange(prompt_len, device=keys.device)
        if isinstance(self._cache, list):
            for i, ((k, v), cache, attn) in enumerate(zip(kv, self._cache, self._attention_layers())):
                cache.update(k, v, i, {"cache_position": positions})
                attn.past_key_value = cache
        else:
            for i, (k, v) in enumerate(kv):
                self._cache.update(k, v, i, {"cache_position": positions})
        if self.compile:
            self._step = self._compiled("_eager_step", keys.device)
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
        if self._explicit_layout:
            self._mask[:, position] = 1
        pos = torch.full((1,), int(position), dtype=torch.long, device=ids.device)
        cache = None if isinstance(self._cache, list) else self._cache  # 4.40: read from the attention modules
        mask = self._mask if self._explicit_layout else None  # transformers 5: the cache's causal mask suffices
        return self._step(ids[:, None], pos, mask, cache)

    def _eager_step(self, ids: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None, cache: Any) -> torch.Tensor:
        kw: dict[str, Any] = {"cache_position": pos} if self._takes_cache_position else {}
        out = self._inner(
            input_ids=ids, attention_mask=mask, past_key_values=cache,
            position_ids=pos[None].expand(ids.shape[0], -1), use_cache=True, **kw,
        )
        return out.logits[:, -1]

    def _compiled(self, name: str, device: torch.device) -> Any:
        """``torch.compile`` of the method ``name`` (``mode="reduce-overhead"``, CUDA graphs, on CUDA), made once."""
        mode = _mode(device)
        if (name, mode) not in self._compiled_fns:
            self._compiled_fns[name, mode] = torch.compile(getattr(self, name), mode=mode, dynamic=False)
        return self._compiled_fns[name, mode]
