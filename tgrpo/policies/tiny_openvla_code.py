"""Model code of the tiny OpenVLA-layout VLA written by :func:`tgrpo.policies.tiny_vla.save_tiny_openvla`.

:func:`~tgrpo.policies.tiny_vla.save_tiny_openvla` copies this file into the model directory and names its
classes in ``auto_map``, so the directory loads the way ``openvla/openvla-7b`` does: through
``trust_remote_code=True``, ``AutoModelForVision2Seq`` and ``AutoProcessor``. It imports only torch and
transformers (a model directory's code must not need this package).

What it reproduces of OpenVLA's input layout (and nothing of its size):

* ``model_type == "openvla"``, ``norm_stats`` (per-dataset action statistics) on the config and the model;
* no image token in the text: the processor returns ``input_ids`` (BOS first), ``attention_mask`` and
  ``pixel_values``, and the model inserts the projected image patches right after the first (BOS) position,
  with an all-ones attention mask over them; the logits are therefore ``n_patches`` longer than the ids;
* a language model whose embedding table is padded beyond the tokenizer's vocabulary (``pad_to_multiple_of``).

Vision tower: one strided convolution (a patch embedding); projector: one linear layer; language model: a
``LlamaForCausalLM`` built from ``text_config``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import CausalLMOutputWithPast


class TinyOpenVLAConfig(PretrainedConfig):
    """Config of the tiny OpenVLA-layout model (``model_type = "openvla"``)."""

    model_type = "openvla"

    def __init__(
        self,
        text_config: dict[str, Any] | None = None,
        image_size: int = 32,
        patch_size: int = 8,
        vision_dim: int = 32,
        norm_stats: dict[str, Any] | None = None,
        n_action_bins: int = 256,
        pad_to_multiple_of: int = 64,
        **kwargs: Any,
    ) -> None:
        self.text_config = dict(text_config or {})
        self.image_size = image_size
        self.patch_size = patch_size
        self.vision_dim = vision_dim
        self.norm_stats = norm_stats
        self.n_action_bins = n_action_bins
        self.pad_to_multiple_of = pad_to_multiple_of
        super().__init__(**kwargs)


class TinyOpenVLAForActionPrediction(PreTrainedModel):
    """Image patches inserted after BOS into a Llama decoder, as OpenVLA's forward does."""

    config_class = TinyOpenVLAConfig
    base_model_prefix = "tiny_openvla"
    supports_gradient_checkpointing = True

    def __init__(self, config: TinyOpenVLAConfig) -> None:
        super().__init__(config)
        self.vision = nn.Conv2d(3, config.vision_dim, config.patch_size, stride=config.patch_size)
        self.language_model = LlamaForCausalLM(LlamaConfig(**config.text_config))
        self.projector = nn.Linear(config.vision_dim, self.language_model.config.hidden_size)
        self.norm_stats = config.norm_stats
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    def patch_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, n_patches, hidden]: the projected patches the decoder sees after BOS."""
        patches = self.vision(pixel_values.to(self.vision.weight.dtype)).flatten(2).transpose(1, 2)
        return self.projector(patches)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> CausalLMOutputWithPast:
        """OpenVLA's three cases: text only, a cached decoding step, or ids + one image per row (the patches go
        after the first position). Unknown keyword arguments are refused, as OpenVLA's forward refuses them."""
        if inputs_embeds is not None:
            raise ValueError("pass input_ids; inputs_embeds are not supported.")
        use_cache = bool(use_cache) and not self.training
        if past_key_values is not None and input_ids is not None and input_ids.shape[1] == 1 and input_ids.shape[0] != 1:
            raise ValueError("cached generation is only supported for batch size 1 (as OpenVLA's forward asserts).")
        if pixel_values is None or past_key_values is not None:  # text only, or a cached decoding step
            out = self.language_model(
                input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
                use_cache=use_cache, labels=labels,
            )
            return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, past_key_values=out.past_key_values)
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError("one image per row: input_ids and pixel_values differ in batch size.")
        text = self.get_input_embeddings()(input_ids)
        patches = self.patch_embeddings(pixel_values).to(text.dtype)
        embeds = torch.cat([text[:, :1], patches, text[:, 1:]], dim=1)
        mask = None
        if attention_mask is not None:
            ones = attention_mask.new_ones((attention_mask.shape[0], patches.shape[1]))
            mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)
        if labels is not None:
            ignore = labels.new_full((labels.shape[0], patches.shape[1]), -100)
            labels = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)
        out = self.language_model(
            inputs_embeds=embeds, attention_mask=mask, use_cache=use_cache, labels=labels
        )
        return CausalLMOutputWithPast(loss=out.loss, logits=out.logits, past_key_values=out.past_key_values)


class TinyPrismaticProcessor:
    """Tokenizer + image processor with OpenVLA's processor call: ``processor(text, images)`` returns
    ``input_ids``, ``attention_mask`` and ``pixel_values``; the text carries no image token."""

    def __init__(self, image_processor: Any, tokenizer: Any) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """Nothing to register (transformers' ``AutoProcessor`` calls this on code loaded from a directory)."""

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> TinyPrismaticProcessor:
        trust = bool(kwargs.get("trust_remote_code", False))  # the parts may read config.json and its auto_map
        return cls(
            AutoImageProcessor.from_pretrained(path, trust_remote_code=trust),
            AutoTokenizer.from_pretrained(path, trust_remote_code=trust),
        )

    def __call__(
        self,
        text: str | list[str] | None = None,
        images: Any = None,
        return_tensors: str = "pt",
        padding: bool | str = False,
        **kwargs: Any,
    ) -> BatchFeature:
        pixel_values = self.image_processor(images, return_tensors=return_tensors)["pixel_values"]
        text_inputs = self.tokenizer(text, return_tensors=return_tensors, padding=padding)
        return BatchFeature(data={**text_inputs, "pixel_values": pixel_values})
