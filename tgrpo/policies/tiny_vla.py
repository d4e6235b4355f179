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


def _tokenizer(
    n_bins: int,
    tokenizer_cls: type,
    *,
    base_size: int | None = None,
    fixed: dict[str, int] | None = None,
    pad_token: str = "<pad>",
    added: tuple[str, ...] = ("<image>",),
):
    """A word-level tokenizer: the known words, ``fixed`` tokens at given ids, filler tokens up to
    ``base_size`` (default: no fillers), the ``n_bins`` action tokens as the last ids of that base vocabulary,
    then the added ``pad_token`` and ``added`` special tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    prompt_words = re.findall(r"\w+|[^\w\s]", OPENVLA_PROMPT.replace("{instruction}", "").lower())
    for w in [*prompt_words, *TINY_WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789", *".,:;?!'-"]:
        vocab.setdefault(w, len(vocab))
    fixed = dict(fixed or {})
    size = base_size if base_size is not None else len(vocab) + len(fixed) + n_bins
    taken = set(fixed.values())
    if len(vocab) + len(fixed) + n_bins > size or taken & set(vocab.values()) or max(taken, default=0) >= size - n_bins:
        raise ValueError(f"the fixed tokens {fixed} do not fit a base vocabulary of {size} ids.")
    for i in range(len(vocab), size - n_bins):
        if i not in taken:
            vocab[f"<unused_{i}>"] = i
    vocab.update(fixed)
    for k in range(n_bins):
        vocab[f"<action_{k}>"] = size - 1 - k
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    hf_tok = tokenizer_cls(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", padding_side="right"
    )
    special: dict[str, object] = {"pad_token": pad_token}
    if added:
        special["additional_special_tokens"] = list(added)
    hf_tok.add_special_tokens(special)
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


#: OpenVLA-7B's vocabulary: Llama-2's 32000 ids (the last 256 are the action bins), "<PAD>" added as 32000,
#: the embedding table padded to a multiple of 64 (32064 logits); id 29871 is the empty token "▁".
OPENVLA_VOCAB_SIZE = 32000
OPENVLA_PAD_TO_MULTIPLE_OF = 64
OPENVLA_EMPTY_TOKEN = "▁"

#: ``norm_stats`` of :func:`save_tiny_openvla` when none are given: two datasets, so that ``unnorm_key`` matters.
TINY_NORM_STATS = {
    "libero_object": {
        "action": {
            "q01": [-0.8, -0.7, -0.9, -0.1, -0.2, -0.3, 0.0],
            "q99": [0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
    "libero_spatial": {
        "action": {
            "q01": [-0.5, -0.5, -0.5, -0.05, -0.05, -0.05, 0.0],
            "q99": [0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 1.0],
            "mask": [True, True, True, True, True, True, False],
        }
    },
}


def save_tiny_openvla(
    path: str | os.PathLike,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    norm_stats: dict | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny random-weight VLA with OpenVLA's input layout and remote-code loading to ``path``.

    The directory holds ``config.json`` (``model_type = "openvla"``, ``norm_stats``, ``auto_map`` naming
    ``AutoConfig`` and ``AutoModelForVision2Seq``, as OpenVLA's does), the model code
    (:mod:`tgrpo.policies.tiny_openvla_code`, copied as ``modeling_tiny_openvla.py``), safetensors weights, an
    image processor whose ``auto_map`` names the processor class, and a tokenizer with OpenVLA's ids: 32000
    base ids whose last 256 are the action tokens, ``"▁"`` at 29871, BOS 1, ``<PAD>`` 32000; the embedding
    table has 32064 rows. It loads only with ``trust_remote_code=True``, as ``openvla/openvla-7b`` does::

        policy = HFVLAPolicy.from_pretrained(save_tiny_openvla("/tmp/tiny-openvla"), trust_remote_code=True,
                                             unnorm_key="libero_object", dtype="float32")

    Args:
        path: output directory (created).
        image_size: side of the square input image.
        patch_size: side of a patch; the model inserts ``(image_size / patch_size) ** 2`` patches after BOS.
        hidden_size: width of the Llama decoder.
        num_layers: decoder layers.
        norm_stats: per-dataset action statistics (``{key: {"action": {"q01", "q99", "mask"}}}``); default
            :data:`TINY_NORM_STATS`.
        seed: seed of the random weights.

    Returns:
        ``path`` as a ``Path``.
    """
    import json
    import shutil

    from transformers import PreTrainedTokenizerFast

    from tgrpo.policies import tiny_openvla_code as code
    from tgrpo.policies.hf import OPENVLA_EMPTY_TOKEN_ID

    try:  # transformers >= 5: the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as ImageProcessor
    except ImportError:  # transformers 4.x: the slow processor is PIL/NumPy based
        from transformers import CLIPImageProcessor as ImageProcessor

    if image_size % patch_size:
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size={patch_size}.")
    tok = _tokenizer(
        N_BINS,
        PreTrainedTokenizerFast,
        base_size=OPENVLA_VOCAB_SIZE,
        fixed={OPENVLA_EMPTY_TOKEN: OPENVLA_EMPTY_TOKEN_ID},
        pad_token="<PAD>",
        added=(),
    )
    rows = -(-len(tok) // OPENVLA_PAD_TO_MULTIPLE_OF) * OPENVLA_PAD_TO_MULTIPLE_OF
    text = {
        "vocab_size": rows,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    module = "modeling_tiny_openvla"
    config = code.TinyOpenVLAConfig(
        text_config=text,
        image_size=image_size,
        patch_size=patch_size,
        vision_dim=hidden_size // 2,
        norm_stats=norm_stats if norm_stats is not None else TINY_NORM_STATS,
        pad_to_multiple_of=OPENVLA_PAD_TO_MULTIPLE_OF,
        pad_token_id=tok.pad_token_id,
    )
    config.auto_map = {
        "AutoConfig": f"{module}.TinyOpenVLAConfig",
        "AutoModelForVision2Seq": f"{module}.TinyOpenVLAForActionPrediction",  # OpenVLA's only model entry
    }
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = code.TinyOpenVLAForActionPrediction(config)
    torch.random.set_rng_state(state)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    shutil.copyfile(code.__file__, out / f"{module}.py")
    tok.save_pretrained(out)
    image_proc = ImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    image_proc.save_pretrained(out)
    pre = out / "preprocessor_config.json"
    cfg = json.loads(pre.read_text())
    cfg["auto_map"] = {"AutoProcessor": f"{module}.TinyPrismaticProcessor"}
    pre.write_text(json.dumps(cfg, indent=2))
    return out
