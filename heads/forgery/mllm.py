"""FakeReasoning as a composable head: dual-branch encoder + fusion -> LLaVA-style image-token splice -> any
transformers causal LM (LoRA through peft) -> text, and the Classification Probability Mapper -> P(fake).

Training loss = LM loss (next-token CE on the answer tokens) + CE of the mapper's two-way logits (weights 1 and 1,
official ``llava_trainer.compute_loss``). Trainable: LoRA on the LM, both projectors and the fusion; the visual
branches and the LM's base weights are frozen (official ``finetune_task_lora.sh``: lora_r 128, alpha 256).

The image placeholder is a negative id (LLaVA's ``IMAGE_TOKEN_INDEX = -200``) that never reaches the embedding
table: the image tokens replace it. transformers and peft are imported lazily (only where an LM is built/wrapped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import DualBranchEncoder, FakeReasoningImageProcessor
from .fusion import convert_official_fusion_state_dict
from .mapper import ClassificationProbabilityMapper, token_at_char
from .prompt import (
    ANSWER_WORDS,
    CONCLUSION_PROMPT,
    QUESTION,
    SYSTEM,
    build_prompt,
    parse_conclusion,
    split_at_conclusion,
)

__all__ = [
    "IGNORE_INDEX",
    "IMAGE_TOKEN_INDEX",
    "FakeReasoning",
    "FakeReasoningOutput",
    "FakeReasoningProcessor",
    "ForgeryVerdict",
    "OFFICIAL_LM",
    "OFFICIAL_TRAINED_PREFIXES",
    "TRAINED_VISUAL_PREFIXES",
    "build_official_fakereasoning",
    "convert_official_fakereasoning_state_dict",
    "load_official_fakereasoning_weights",
]

IGNORE_INDEX = -100
IMAGE_TOKEN_INDEX = -200


@dataclass
class EncodedSample:
    input_ids: torch.Tensor  # (L,) with one IMAGE_TOKEN_INDEX
    labels: torch.Tensor  # (L,) IGNORE_INDEX outside the answer
    answer_position: int  # index (in input_ids) of the logits that predict the answer word
    label: int | None = None


class FakeReasoningProcessor:
    """Prompt template + tokenizer + image processor: builds training samples and generation prompts."""

    def __init__(self, tokenizer, image_processor: FakeReasoningImageProcessor | None = None,
                 question: str = QUESTION, system: str = SYSTEM):
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("FakeReasoningProcessor needs a fast tokenizer (offsets locate the answer token)")
        self.tokenizer = tokenizer
        self.image_processor = image_processor or FakeReasoningImageProcessor()
        self.prompt_head, self.prompt_tail = build_prompt(question, system)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_ids(self) -> list[int]:
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self._ids(self.prompt_head) + [IMAGE_TOKEN_INDEX] + self._ids(self.prompt_tail)

    def encode_training(self, response: str) -> EncodedSample:
        """Prompt + answer; labels on the answer (and EOS) only; the position the mapper reads."""
        label = parse_conclusion(response)  # raises MissingConclusionError on a text without a conclusion
        answer_text = " " + response
        encoded = self.tokenizer(answer_text, add_special_tokens=False, return_offsets_mapping=True)
        answer_ids = list(encoded["input_ids"])
        word_char = answer_text.index(CONCLUSION_PROMPT) + len(CONCLUSION_PROMPT)
        while answer_text[word_char].isspace():
            word_char += 1
        word_token = token_at_char(encoded["offset_mapping"], word_char)
        prompt = self.prompt_ids()
        eos = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        ids = prompt + answer_ids + eos
        labels = [IGNORE_INDEX] * len(prompt) + answer_ids + eos
        return EncodedSample(torch.tensor(ids), torch.tensor(labels), len(prompt) + word_token - 1, label)

    def encode_conclusion_prefix(self, generated_text: str) -> tuple[EncodedSample, bool]:
        """Prompt + generated text cut right after "This image is" (appended when missing): P(fake) reads its end.

        The cut is where :meth:`encode_training` reads: the prefix is tokenized with an answer word after it and the
        ids stop right before that word's token. Tokenizers differ in what that leaves: LLaMA's '▁real' carries
        its space, so the ids end at 'is'; a tokenizer with whitespace tokens (the tiny word-level one) ends at the
        ' ' token, the position that training taught to predict the answer word. Reading at 'is' there would read
        logits that were trained to predict the space.
        """
        prefix, had_prompt = split_at_conclusion(generated_text.strip())
        text = f" {prefix} {ANSWER_WORDS[0]}"
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        word_token = token_at_char(encoded["offset_mapping"], len(text) - len(ANSWER_WORDS[0]))
        ids = self.prompt_ids() + list(encoded["input_ids"][:word_token])
        return EncodedSample(torch.tensor(ids), torch.full((len(ids),), IGNORE_INDEX), len(ids) - 1), had_prompt


@dataclass
class FakeReasoningOutput:
    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    cls_loss: torch.Tensor | None
    logits: torch.Tensor  # (B, L', V) over the spliced sequence
    binary_logits: torch.Tensor  # (B, 2): (real, fake) / T
    probability_fake: torch.Tensor  # (B,)


@dataclass
class ForgeryVerdict:
    text: str
    probability_fake: float
    conclusion_in_text: bool  # False: the text had no conclusion prompt and it was appended to read P(fake)

    @property
    def label(self) -> int:
        return int(self.probability_fake > 0.5)


class FakeReasoning(nn.Module):
    """Visual encoder (two branches, projectors, fusion) + causal LM + probability mapper.

    Args:
        visual: a :class:`DualBranchEncoder` whose ``width`` equals the LM's hidden size.
        language_model: any transformers causal LM (``get_input_embeddings`` and ``inputs_embeds`` support).
        processor: :class:`FakeReasoningProcessor` (its tokenizer defines the answer token ids).
        temperature: the mapper's temperature (10 in the paper).
    """

    def __init__(self, visual: DualBranchEncoder, language_model: nn.Module, processor: FakeReasoningProcessor,
                 temperature: float = 10.0):
        super().__init__()
        hidden = language_model.get_input_embeddings().weight.shape[1]
        if visual.width != hidden:
            raise ValueError(f"visual encoder width {visual.width} != language model hidden size {hidden}")
        self.visual = visual
        self.language_model = language_model
        self.processor = processor
        self.mapper = ClassificationProbabilityMapper.from_tokenizer(processor.tokenizer, temperature)

    # ---------------------------------------------------------------- parameters
    def enable_lora(self, r: int = 128, alpha: int = 256, dropout: float = 0.05, target_modules="all-linear"):
        """Wrap the LM with peft LoRA (base frozen); projectors and fusion stay fully trainable, branches frozen."""
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                            bias="none", task_type="CAUSAL_LM")
        self.language_model = get_peft_model(self.language_model, config)
        for module in (self.visual.high_projector, self.visual.low_projector, self.visual.fusion):
            module.requires_grad_(True)
        return self

    def enable_full_training(self):
        """Train the whole LM (no LoRA) with the projectors and fusion; the visual branches stay frozen.

        For an LM without pretrained weights (the tiny random builds): LoRA keeps the base frozen, and a random
        frozen output layer (initializer_range 0.02: logits with std 0.16 over a 215-token vocabulary) caps every
        logit, so neither the text nor the mapper's two-way logits (divided by the temperature 10) can become
        confident (measured in the README). The paper's LM is pretrained, and LoRA (:meth:`enable_lora`) is its recipe.
        """
        self.language_model.requires_grad_(True)
        for module in (self.visual.high_projector, self.visual.low_projector, self.visual.fusion):
            module.requires_grad_(True)
        return self

    def trainable_parameter_names(self) -> list[str]:
        return [name for name, p in self.named_parameters() if p.requires_grad]

    # ---------------------------------------------------------------- splice
    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.get_input_embeddings()(ids)

    def _splice(self, samples: list[EncodedSample], image_tokens: torch.Tensor, pad_left: bool):
        """Replace each sample's image placeholder by its image tokens; pad; shift positions accordingly."""
        rows, row_labels, positions = [], [], []
        device = image_tokens.device
        for sample, tokens in zip(samples, image_tokens, strict=True):
            ids = sample.input_ids.to(device)
            where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten()
            if where.numel() != 1:
                raise ValueError(f"each sample needs exactly one image placeholder; found {where.numel()}")
            cut = int(where[0])
            before, after = ids[:cut], ids[cut + 1:]
            text_before = self._embed(before)
            rows.append(torch.cat([text_before, tokens.to(text_before.dtype), self._embed(after)]))
            labels = sample.labels.to(device)
            row_labels.append(torch.cat([labels[:cut], labels.new_full((tokens.shape[0],), IGNORE_INDEX),
                                         labels[cut + 1:]]))
            shift = tokens.shape[0] - 1 if sample.answer_position > cut else 0
            positions.append(sample.answer_position + shift)
        length = max(row.shape[0] for row in rows)
        batch, width = len(rows), rows[0].shape[1]
        embeds = rows[0].new_zeros(batch, length, width)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long, device=device)
        mask = torch.zeros(batch, length, dtype=torch.long, device=device)
        for i, (row, lab) in enumerate(zip(rows, row_labels)):
            start = length - row.shape[0] if pad_left else 0
            embeds[i, start:start + row.shape[0]] = row
            labels[i, start:start + row.shape[0]] = lab
            mask[i, start:start + row.shape[0]] = 1
            positions[i] += start
        return embeds, mask, labels, torch.tensor(positions, device=device)

    # ---------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, samples: list[EncodedSample],
                forgery_labels: torch.Tensor | None = None) -> FakeReasoningOutput:
        """Teacher-forced pass. Loss = LM + mapper CE when the samples carry labels (encode_training)."""
        if len(samples) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(samples)} token sequences")
        image_tokens = self.visual(images)
        embeds, mask, labels, positions = self._splice(samples, image_tokens, pad_left=False)
        logits = self.language_model(inputs_embeds=embeds, attention_mask=mask).logits
        binary = self.mapper.binary_logits(logits, positions)
        p_fake = self.mapper.probability_fake(binary)
        if forgery_labels is None and all(s.label is not None for s in samples):
            forgery_labels = torch.tensor([s.label for s in samples])
        lm_loss = cls_loss = loss = None
        if (labels != IGNORE_INDEX).any():
            lm_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                      ignore_index=IGNORE_INDEX)
        if forgery_labels is not None:
            cls_loss = self.mapper.loss(binary, forgery_labels)
        if lm_loss is not None and cls_loss is not None:
            loss = lm_loss + cls_loss
        return FakeReasoningOutput(loss, lm_loss, cls_loss, logits, binary, p_fake)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int = 512, **generate_kwargs) -> list[ForgeryVerdict]:
        """Reasoning text (greedy unless told otherwise) and P(fake) read after the conclusion prompt."""
        tokenizer = self.processor.tokenizer
        prompt = torch.tensor(self.processor.prompt_ids())
        samples = [EncodedSample(prompt, torch.full_like(prompt, IGNORE_INDEX), len(prompt) - 1)] * images.shape[0]
        image_tokens = self.visual(images)
        embeds, mask, _, _ = self._splice(samples, image_tokens, pad_left=True)
        generate_kwargs.setdefault("do_sample", False)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        new_ids = self.language_model.generate(inputs_embeds=embeds, attention_mask=mask,
                                               max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                               eos_token_id=tokenizer.eos_token_id, **generate_kwargs)
        texts = [t.strip() for t in tokenizer.batch_decode(new_ids, skip_special_tokens=True)]
        prefixes, found = zip(*(self.processor.encode_conclusion_prefix(t) for t in texts))
        out = self.forward(images, list(prefixes))
        return [ForgeryVerdict(text, float(p), bool(had)) for text, p, had in zip(texts, out.probability_fake, found)]


# ---------------------------------------------------------------------------------------------- official weights
_OFFICIAL_VISUAL_PREFIXES = (
    ("model.mm_projector.", "visual.high_projector."),
    ("model.dino_mm_projector.", "visual.low_projector."),
)


def convert_official_fakereasoning_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained (non-LM) part of an official FakeReasoning checkpoint -> this head's ``visual.*`` keys.

    Accepts merged checkpoints (``model.mm_projector.0.weight``) and LLaVA's LoRA ``non_lora_trainables.bin``
    (``base_model.model.model.mm_projector.0.weight``). The frozen towers' weights are not in the official
    checkpoint (they load from CLIP / DINOv2 releases); LM weights are left out (load them into the LM).
    """
    cleaned = {re.sub(r"^base_model\.model\.", "", k): v for k, v in state_dict.items()}
    converted = {}
    for official, ours in _OFFICIAL_VISUAL_PREFIXES:
        converted.update({ours + k[len(official):]: v for k, v in cleaned.items() if k.startswith(official)})
    fusion = {k: v for k, v in cleaned.items() if k.startswith("model.crossattention.")}
    if fusion:
        converted.update({"visual.fusion." + k: v for k, v in
                          convert_official_fusion_state_dict(fusion, "model.crossattention.").items()})
    if not converted:
        raise KeyError("no mm_projector / dino_mm_projector / crossattention keys: not a FakeReasoning checkpoint")
    return converted


# Published names (paper setup). Loading them needs the network; never called in tests.
OFFICIAL_LM = "AnnaGao/FakeReasoning"  # merged LLaVA-1.5-13B-style checkpoint (Vicuna-13B LM, width 5120)
# The official checkpoint's keys of the trained non-LM part (what convert_official_fakereasoning_state_dict reads).
OFFICIAL_TRAINED_PREFIXES = ("model.mm_projector.", "model.dino_mm_projector.", "model.crossattention.")
# This head's keys of that part; the branches (visual.high_level / visual.low_level) and the LM load elsewhere.
TRAINED_VISUAL_PREFIXES = ("visual.high_projector.", "visual.low_projector.", "visual.fusion.")


def load_official_fakereasoning_weights(model: FakeReasoning, state_dict: dict[str, torch.Tensor]) -> FakeReasoning:
    """The released projectors and fusion (``state_dict`` in the official checkpoint's keys, e.g. the
    ``model.mm_projector.*`` / ``model.dino_mm_projector.*`` / ``model.crossattention.*`` tensors of its shards) into
    ``model``; every one of them must be there and fit. ``attnzoo.tasks.forgery.official`` reads them from the shards."""
    converted = convert_official_fakereasoning_state_dict(state_dict)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if k.startswith(TRAINED_VISUAL_PREFIXES)]
    if unexpected or missing:
        raise ValueError(f"official FakeReasoning weights did not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def build_official_fakereasoning(model_path: str = OFFICIAL_LM, device: str = "cpu",
                                 dtype: torch.dtype = torch.float16,
                                 projector_state: dict[str, torch.Tensor] | None = None) -> FakeReasoning:
    """Paper configuration: CLIP ViT-L/14-336 (open_clip 'openai'), DINOv2 ViT-L/14 (timm), the released LM and
    tokenizer (transformers, ``model_path``: a Hub id or a folder), projectors and fusion (width 5120, 16 heads, FFN
    20480, dropout 0.1). The released projectors and fusion are loaded when ``projector_state`` (the official
    checkpoint's tensors, :func:`load_official_fakereasoning_weights`) is given; without it they keep their random
    initialisation. ``attnzoo.tasks.forgery.official.load_official_fakereasoning`` reads them from the shards."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .encoder import OpenCLIPTokens, TimmViTTokens

    tokenizer = AutoTokenizer.from_pretrained(model_path, use_fast=True)
    language_model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=dtype)
    width = language_model.get_input_embeddings().weight.shape[1]
    visual = DualBranchEncoder(OpenCLIPTokens.from_pretrained(), TimmViTTokens.from_pretrained(), width,
                               fusion_heads=16, fusion_ffn=4 * width, dropout=0.1, bias_hidden=32)
    model = FakeReasoning(visual, language_model, FakeReasoningProcessor(tokenizer))
    if projector_state is not None:
        load_official_fakereasoning_weights(model, projector_state)
    return model.to(device=device, dtype=dtype).eval()
