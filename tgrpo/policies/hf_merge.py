"""Sampling on merged weights: the LoRA update folded into a copy of the base weights, used by the sampling
forwards only.

In eager mode a LoRA adapter on every linear layer adds several kernels per layer (its float32 matrices, the
casts, the scaled sum), and on a GPU these launches, not the arithmetic, bound a 7B model's decoding step.
:class:`MergedWeights` keeps, beside each adapted layer's base weight W, a merged copy

    W' = W + (alpha / r) * B @ A        (the adapter 'default'; one matrix product per layer, in W's dtype)

While :meth:`MergedWeights.active`, each base layer's weight points at its W' (a pointer swap, no copy) and
the LoRA layers skip their adapters, so the sampling forwards run the plain model; on leaving, the weights point
at W again. W itself is never written: the update's forward and the reference never see a merged weight. The
adapters are skipped through each LoRA layer's own switch (``_disable_adapters``, what peft's
``disable_adapter()`` sets), not through ``disable_adapter()``, which also walks every module and resets
``requires_grad`` on every adapter matrix: about 0.24 ms per LoRA layer, some 90 ms per call for a 7B model.

W' is computed again only when what it was made from changed: an adapter matrix (compared bit for bit with a
float32 snapshot taken at the merge, which also catches optimizers that bypass tensor version counters, such as
fused AdamW), the LoRA scaling, or a base weight (its storage or version counter: base weights are frozen and
change only by in-place copies, which bump it). A rollout samples its L steps between two updates, so it merges
once; each later call of the rollout costs one comparison (one pass over the adapter, about 0.4 GB for a 7B
model at r=32) and the swaps. The merged copies stay at the same addresses, so CUDA graphs captured while
sampling (a compiled decoding step or prefill) stay valid.

Cost: one merged copy of every adapted base weight (about 13 GiB for a 7B model in bf16) and the adapter's
snapshot. The sampled log-probs are those of the merged weights, which differ from the update's forward by
rounding; ``recompute_old_log_probs`` replaces them with the update's own (the importance ratio then starts at
exactly 1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MergedWeights"]


class MergedWeights:
    """Merged copies of a peft model's base weights with the adapter ``adapter``, swapped in while :meth:`active`.

    Args:
        model: a ``peft.PeftModel`` with LoRA adapters on linear layers.
        adapter: the adapter to merge (the trained one, ``"default"``).

    Attributes:
        merges: how many times the merged copies were computed (once per change of the adapter).

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
        self.merged = [torch.empty_like(m.base_layer.weight) for m in self.layers]
        live = self._adapter_weights()
        # the adapter's matrices in the base weights' dtype (the merge's operands), and as they were at the merge
        self._low = [torch.empty_like(t, dtype=m.base_layer.weight.dtype)
                     for m in self.layers for t in (m.lora_A[adapter].weight, m.lora_B[adapter].weight)]
        self._snapshot = [torch.empty_like(t) for t in live]
        self._made_from: tuple[Any, ...] | None = None
        self.merges = 0

    @property
    def merged_bytes(self) -> int:
        """Memory held by the merged copies of the base weights."""
        return sum(w.numel() * w.element_size() for w in self.merged)

    def _adapter_weights(self) -> list[torch.Tensor]:
        return [t.weight for m in self.layers for t in (m.lora_A[self.adapter], m.lora_B[self.adapter])]

    def _base_state(self) -> tuple[Any, ...]:
        return tuple((m.base_layer.weight.data_ptr(), m.base_layer.weight._version, float(m.scaling[self.adapter]))
                     for m in self.layers)

    def _adapter_changed(self, live: list[torch.Tensor]) -> bool:
        """Whether any adapter matrix differs from the snapshot of the last merge (one pass, one sync)."""
        norms = torch._foreach_norm(torch._foreach_sub(live, self._snapshot))
        return bool(torch.stack(norms).ne(0).any())  # NaN counts as a change

    def refresh(self) -> bool:
        """Compute the merged copies again if the adapter, its scaling or a base weight changed since the last
        merge; returns whether it did."""
        with torch.no_grad():
            live, base = self._adapter_weights(), self._base_state()
            if base == self._made_from and not self._adapter_changed(live):
                return False
            torch._foreach_copy_(self._low, live)  # one call, not one cast per matrix
            for i, (m, out) in enumerate(zip(self.layers, self.merged)):
                a, b = self._low[2 * i], self._low[2 * i + 1]
                torch.addmm(m.base_layer.weight, b, a, alpha=float(m.scaling[self.adapter]), out=out)
            torch._foreach_copy_(self._snapshot, live)
        self._made_from = base
        self.merges += 1
        return True

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Inside: the base layers use the merged copies and the LoRA layers skip their adapters. On leaving
        (also on an error) both are as before."""
        self.refresh()
        weights = [m.base_layer.weight for m in self.layers]
        own, switches = [w.data for w in weights], [m._disable_adapters for m in self.layers]
        try:
            for m, w, merged in zip(self.layers, weights, self.merged):
                w.data = merged
                m._disable_adapters = True
            yield
        finally:
            for m, w, data, switch in zip(self.layers, weights, own, switches):
                w.data = data
                m._disable_adapters = switch
