"""Tiny, download-free FakeReasoning builds for tests and the CPU demo: random weights from configs.

* a word-level fast tokenizer built from the texts it must cover (words, single characters as fallback pieces,
  whitespace kept as tokens, so decode(encode(text)) == text and 'real' / 'fake' are single tokens);
* an open_clip ViT and a timm DINOv2-style ViT with a few layers as the two branches;
* a LLaMA causal LM from a LlamaConfig.

The architecture is the paper's; only the sizes are small.
"""

from __future__ import annotations

import re
import string

from .encoder import DualBranchEncoder, FakeReasoningImageProcessor, OpenCLIPTokens, TimmViTTokens
from .prompt import ANSWER_WORDS, CONCLUSION_PROMPT, QUESTION, SYSTEM, build_prompt

__all__ = [
    "build_word_tokenizer",
    "tiny_dual_branch_encoder",
    "tiny_fakereasoning",
    "tiny_open_clip_config",
    "tiny_univfd_clip_config",
]

_PIECES = re.compile(r"\s|\w+|[^\w\s]")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")


def build_word_tokenizer(texts: list[str]):
    """A PreTrainedTokenizerFast over the words of ``texts`` + printable characters (fallback for other words)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    corpus = list(texts) + [SYSTEM, QUESTION, *build_prompt(), CONCLUSION_PROMPT, *ANSWER_WORDS,
                            "<REASONING>", "</REASONING>", "</CONCLUSION>", "<SUMMARY>", "</SUMMARY>"]
    vocab: dict[str, int] = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for piece in [*string.printable, *(p for text in corpus for p in _PIECES.findall(text))]:
        vocab.setdefault(piece, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"\s|\w+|[^\w\s]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")


def tiny_open_clip_config(image_size: int = 56, patch_size: int = 14, width: int = 64, layers: int = 2,
                          embed_dim: int = 32) -> dict:
    """An open_clip ``CLIP(**config)`` config (vision + text towers) with a few layers, random weights.

    The text tower keeps CLIP's 49408-token vocabulary and 77-token context so open_clip's own tokenizer fits it.
    """
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size, "patch_size": patch_size, "width": width, "layers": layers,
                       "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }


def tiny_univfd_clip_config(image_size: int = 32) -> dict:
    """The tiny CLIP the synthetic-set UnivFD demo uses: 2x2 patches (pixel-level traces reach the tokens), one
    block, mean-pooled tokens (open_clip ``pool_type='avg'``), 256-d embedding. With random frozen weights a linear
    probe on it separates the synthetic set well (tests/heads/test_forgery_learning.py); CLS pooling works less well
    without pretraining."""
    config = tiny_open_clip_config(image_size=image_size, patch_size=2, width=64, layers=1, embed_dim=256)
    config["vision_cfg"]["pool_type"] = "avg"
    return config


def tiny_dual_branch_encoder(width: int = 64, image_size: int = 56, dino_heads: int = 4, fusion_heads: int = 16,
                             dropout: float = 0.0) -> DualBranchEncoder:
    import open_clip
    import timm

    clip = open_clip.CLIP(**tiny_open_clip_config(image_size=image_size))
    dino = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=image_size, embed_dim=64,
                             depth=2, num_heads=dino_heads)
    return DualBranchEncoder(OpenCLIPTokens(clip.visual), TimmViTTokens(dino), width, fusion_heads=fusion_heads,
                             dropout=dropout)


def tiny_fakereasoning(texts: list[str], width: int = 64, image_size: int = 56, layers: int = 2, seed: int = 0):
    """A whole FakeReasoning (both branches, fusion, LLaMA LM, tokenizer over ``texts``) with random weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .mllm import FakeReasoning, FakeReasoningProcessor

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(texts)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    language_model = LlamaForCausalLM(config)
    visual = tiny_dual_branch_encoder(width=width, image_size=image_size)
    processor = FakeReasoningProcessor(tokenizer, FakeReasoningImageProcessor(size=image_size))
    return FakeReasoning(visual, language_model, processor)
