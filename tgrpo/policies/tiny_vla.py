"""A tiny LLaVA-architecture VLA built from a config, for tests, benchmarks and smoke tests without a download.

:func:`save_tiny_llava` writes, with ``save_pretrained``, a ``LlavaForConditionalGeneration`` (tiny CLIP
vision tower + tiny Llama) with random weights and a ``LlavaProcessor`` whose tokenizer is built offline with
the ``tokenizers`` library. The directory loads through the same path as OpenVLA-7B::

    policy = HFVLAPolicy.from_pretrained(save_tiny_llava("/tmp/tiny-vla"), dtype="float32")

Vocabulary: a word-level tokenizer (lower-cased, split on whitespace and punctuation) over the words of
OpenVLA's prompt, the LIBERO instructions, letters and digits (anything else is ``<unk>``), then 256 action
tokens ``<action_k>`` as the last ids of the base vocabulary (``<action_k>`` is id ``V - 1 - k``, OpenVLA's
order), then the added tokens ``<pad>`` and ``<image>``.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import torch

from tgrpo.policies.hf import OPENVLA_PROMPT
from tgrpo.tokenizer import N_BINS

#: Words the tiny tokenizer knows besides letters and digits: LIBERO-Object/-Spatial/-Goal instruction words.
TINY_WORDS = (
    "pick up the and place it in basket alphabet soup cream cheese salad dressing bbq sauce ketchup tomato "
    "butter milk chocolate pudding orange juice put on plate bowl open close drawer top middle bottom of "
    "cabinet stove turn wine bottle rack black next to ramekin cookie box wooden tray"
).split()


def _tokenizer_class(processor_cls: type) -> type:
    """The tokenizer class to build: a Llama one where the processor insists on it (transformers 4.x's
    ``LlavaProcessor`` checks ``tokenizer_class``), else ``PreTrainedTokenizerFast``. transformers 5's Llama
    tokenizer rebuilds its own model on load, dropping this word-level one, so it is used only when required."""
    import transformers

    wanted = getattr(processor_cls, "tokenizer_class", None)
    names = wanted if isinstance(wanted, tuple) else (wanted,)
    for name in names:
        if name and name.endswith("Fast") and name != "PreTrainedTokenizerFast" and hasattr(transformers, name):
            return getattr(transformers, name)
    return transformers.PreTrainedTokenizerFast


def _tokenizer(n_bins: int, tokenizer_cls: type):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    prompt_words = re.findall(r"\w+|[^\w\s]", OPENVLA_PROMPT.replace("{instruction}", "").lower())
    for w in [*prompt_words, *TINY_WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789", *".,:;?!'-"]:
        vocab.setdefault(w, len(vocab))
    size = len(vocab) + n_bins
    for k in range(n_bins):
        vocab[f"<action_{k}>"] = size - 1 - k
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf_tok = tokenizer_cls(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="right"
    )
    hf_tok.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    return hf_tok


def _init_parameters(cls: type) -> set[str]:
    """Keyword arguments the constructor of ``cls`` names (its own, not ``**kwargs``)."""
    return {
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def save_tiny_llava(
    path: str | os.PathLike,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    n_bins: int = N_BINS,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight LLaVA VLA and its processor to ``path`` (no download).

    Args:
        path: output directory (created).
        image_size: side of the processor's (and vision tower's) square input.
        patch_size: ViT patch size; the prompt gets ``(image_size / patch_size) ** 2`` image tokens.
        hidden_size: width of the Llama decoder (the vision tower is half as wide).
        num_layers: layers of each tower.
        n_bins: action tokens at the end of the vocabulary (256).
        seed: seed of the random weights.

    Returns:
        ``path`` as a ``Path``; load it with ``HFVLAPolicy.from_pretrained(path)``.
    """
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    try:  # transformers >= 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x: the slow processor is PIL/NumPy based
        from transformers import CLIPImageProcessor as ImageProcessor

    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}.")
    tok = _tokenizer(n_bins, _tokenizer_class(LlavaProcessor))
    image_proc = ImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    # transformers >= 4.47 expands "<image>" into the patch tokens in the processor; 4.40's processor takes
    # no such options and the model expands the single "<image>" token itself. Pass what the class accepts.
    wanted = {
        "patch_size": patch_size,
        "vision_feature_select_strategy": "default",
        "image_token": "<image>",
        "num_additional_image_tokens": 1,
    }
    accepted = _init_parameters(LlavaProcessor)
    processor = LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        **{k: v for k, v in wanted.items() if k in accepted},
    )
    vision = CLIPVisionConfig(
        hidden_size=hidden_size // 2,
        intermediate_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        # no padding_idx: a zero pad embedding would pass for an image slot in transformers 4.x's LLaVA merge
        pad_token_id=None,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        pad_token_id=tok.pad_token_id,  # transformers 4.x's LLaVA tells right from left padding by it
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    torch.random.set_rng_state(state)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
