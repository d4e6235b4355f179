"""Sampling on merged weights: the LoRA update folded into the base weights for the sampling forwards only.

In eager mode a LoRA adapter on every linear layer adds several kernels per layer (its float32 matrices, the
casts, the scaled sum), and on a GPU these launches, not the arithmetic, bound a 7B model's decoding step. With
:class:`MergedWeights` active, each adapted layer's base weight holds

    W' = W + (alpha / r) * B @ A        (the adapter 'default'; one matrix product per layer, in W's dtype)

and peft's adapters are switched off, so the sampling forwards run the plain model. Leaving restores W
exactly, by copying it back from a kept copy (not by subtracting, which rounds in bf16): the update's forward
and the reference never see a merged weight, and the weights stay at the same addresses (CUDA graphs captured
by a compiled decoding step stay valid).

Cost: one copy of every adapted base weight (about 13 GiB for a 7B model in bf16), and per sampling call one
merge and one restore (each reads and writes every adapted weight once). The sampled log-probs are those of
the merged weights, which differ from the update's forward by rounding; ``recompute_old_log_probs`` replaces
them with the update's own (the importance ratio then starts at exactly 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MergedWeights"]


class MergedWeights:
    """Merge the adapter ``adapter`` of a peft model into its base weights while :meth:`active`.

    Args:
        model: a ``peft.PeftModel`` with LoRA adapters on linear layers.
        adapter: the adapter to merge (the trained one, ``"default"``).

    Raises:
        ValueError: if the model has no LoRA layer carrying ``adapter``, or one that is not a plain LoRA on an
            ``nn.Linear`` (DoRA, a convolution, an embedding, a transposed ``fan_in_fan_out`` weight).
    """

    def __init__(self, model: Any, adapter: str = "default") -> None:
        from peft.tuners.lora import LoraLayer

        self.model, self.adapter = model, adapter
        self.layers: list[Any] = []
        for name, m in model.named_modules():
            if not isinstance(m, LoraLayer) or adapter not in getattr(m, "lora_A", {}):
                continue
            plain = (isinstance(m.base_layer, nn.Linear) and not getattr(m, "fan_in_fan_out", False)
                     and not getattr(m, "use_dora", {}).get(adapter, False))
            if not plain:
                raise ValueError(
                    f"layer {name!r} ({type(m.base_layer).__name__}) is not a plain LoRA on nn.Linear; merged "
                    "sampling merges only those. Turn it off (merged_sampling=False)."
                )
            self.layers.append(m)
        if not self.layers:
            raise ValueError(f"the model has no LoRA layer with the adapter {adapter!r}; nothing to merge.")
        self.kept = [m.base_layer.weight.detach().clone() for m in self.layers]
        # the adapter's matrices in the base weights' dtype, refreshed from the live ones on each merge
        self._low = [torch.empty_like(t, dtype=w.dtype) for m, w in zip(self.layers, self.kept)
                     for t in (m.lora_A[adapter].weight, m.lora_B[adapter].weight)]

    @property
    def kept_bytes(self) -> int:
        """Memory held by the kept copies of the base weights."""
        return sum(w.numel() * w.element_size() for w in self.kept)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside: merged base weights, peft's adapters off. On leaving (also on an error): W restored exactly."""
        weights = [m.base_layer.weight for m in self.layers]
        try:
            with torch.no_grad():
                live = [t.weight for m in self.layers for t in (m.lora_A[self.adapter], m.lora_B[self.adapter])]
                torch._foreach_copy_(self._low, live)  # one call, not one cast per matrix
                for i, (m, w, w0) in enumerate(zip(self.layers, weights, self.kept)):
                    a, b = self._low[2 * i], self._low[2 * i + 1]
                    torch.addmm(w0, b, a, alpha=float(m.scaling[self.adapter]), out=w)
            with self.model.disable_adapter():
                yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(weights, self.kept)
