"""Token-action policies beyond the built-in state MLP.

* :class:`VisionLanguageTokenPolicy` (plain torch): camera images + instruction (+ state) -> 7 action tokens;
  small enough to train with TGRPO on a laptop CPU.
* :class:`HFVLAPolicy` (``pip install libero-tgrpo[hf]``): any Hugging Face vision-to-text model with
  OpenVLA's action-token convention (e.g. ``openvla/openvla-7b``), wrapped in a peft LoRA adapter.
* :func:`save_tiny_llava`: writes a tiny LLaVA-architecture VLA built from a config (no download), to test the
  Hugging Face path end to end; :func:`save_tiny_openvla`: a tiny model with OpenVLA's input layout, ids,
  ``norm_stats`` and remote-code loading.

The Hugging Face names are imported lazily: ``import tgrpo.policies`` does not import transformers or peft.
"""

from __future__ import annotations

import importlib
from typing import Any

from tgrpo.policies.vision import CAMERA_KEYS, ConvEncoder, VisionLanguageTokenPolicy, hash_instruction

_LAZY = {
    "HFVLAPolicy": "tgrpo.policies.hf",
    "LoRASettings": "tgrpo.policies.hf",
    "OPENVLA_PROMPT": "tgrpo.policies.hf",
    "openvla_prompt": "tgrpo.policies.hf",
    "openvla_action_transform": "tgrpo.policies.hf",
    "save_tiny_llava": "tgrpo.policies.tiny_vla",
    "save_tiny_openvla": "tgrpo.policies.tiny_vla",
}

__all__ = [
    "CAMERA_KEYS",
    "ConvEncoder",
    "HFVLAPolicy",
    "LoRASettings",
    "OPENVLA_PROMPT",
    "VisionLanguageTokenPolicy",
    "hash_instruction",
    "openvla_action_transform",
    "openvla_prompt",
    "save_tiny_llava",
    "save_tiny_openvla",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tgrpo.policies' has no attribute {name!r}")
