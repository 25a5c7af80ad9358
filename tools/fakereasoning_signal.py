#!/usr/bin/env python
"""Where a trained FakeReasoning run gets its real/fake signal from: the measurements behind the README's FakeReasoning
paragraph (what the tiny configuration learns on the synthetic set, and what it cannot).

    python tools/fakereasoning_signal.py --run runs/fr --test data/forgery_synth/test.jsonl

On up to ``--limit`` test images (half real, half fake) it measures:

1. *text dependence of the mapper*: P(fake) read after the conclusion prompt, teacher-forced with each image's own
   reasoning, with the other class's reasoning, and with one fixed reasoning for every image. When the last is one
   constant value, the mapper reads the text and not the image.
2. *image dependence of the answer*: the first token where a real and a fake answer differ (the synthetic set's
   reasoning gives the label away from there on) is the one place the image must decide. AP of its two logits with the
   prompt alone, on the test images.
3. *gradients reaching the visual path* (projectors + fusion) on one batch of training samples: from the LM loss, from
   the mapper's CE, and from the deciding token's share of the LM loss (the loss is a mean over the answer tokens).
4. *logit scale* at the mapper's position: std of the LM logits and the mean |two-way logit difference| / T.
5. with ``--train`` and ``--visual-probe-steps N``: whether the visual path itself can carry the signal. A copy of the
   run's visual encoder with the trained parts (projectors, fusion) re-initialised trains for N steps with a direct
   binary CE on its mean-pooled output tokens (one linear layer), then is scored by AP on the test images.

The last stdout line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "tools"))
from _clone_import import make_attnzoo_importable  # noqa: E402

make_attnzoo_importable()  # a clone that is not installed

from attnzoo.heads.forgery.data import load_rgb, read_annotations  # noqa: E402
from attnzoo.heads.forgery.metrics import average_precision  # noqa: E402
from attnzoo.heads.forgery.mllm import IGNORE_INDEX, EncodedSample  # noqa: E402
from attnzoo.tasks.forgery.runs import load_run  # noqa: E402


def _balanced(records, limit: int):
    real = [r for r in records if r.label == 0][: limit // 2]
    fake = [r for r in records if r.label == 1][: limit // 2]
    return real + fake


def _grad_norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum(g.pow(2).sum() for g in grads if g is not None)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a FakeReasoning run folder of tools/forgery_train.py")
    parser.add_argument("--test", required=True, help="annotations (.jsonl) to measure on")
    parser.add_argument("--limit", type=int, default=96, help="test images (half real, half fake)")
    parser.add_argument("--batch-size", type=int, default=8, help="training-style batch (gradient norms, probe)")
    parser.add_argument("--train", default=None, help="training annotations, for the visual-path probe")
    parser.add_argument("--visual-probe-steps", type=int, default=0, help="steps of the visual-path probe (0: skip)")
    parser.add_argument("--lr", type=float, default=1e-3, help="visual-path probe learning rate")
    args = parser.parse_args(argv)
    run = load_run(args.run)
    if run.head != "fakereasoning":
        parser.error(f"{args.run} is a {run.head} run; this tool measures FakeReasoning runs")
    model, processor = run.model, run.model.processor
    records = _balanced(read_annotations(args.test), args.limit)
    labels = torch.tensor([r.label for r in records])
    images = torch.stack([processor.image_processor(load_rgb(r.image_path)) for r in records])
    real_text = next(r for r in records if r.label == 0).target_response()
    fake_text = next(r for r in records if r.label == 1).target_response()

    def p_fake(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return model(images, [processor.encode_training(t) for t in texts]).probability_fake

    own = p_fake([r.target_response() for r in records])
    swapped = p_fake([real_text if r.label else fake_text for r in records])
    fixed = p_fake([real_text] * len(records))
    result = {
        "images": len(records),
        "mapper_ap_own_reasoning": average_precision(labels, own),
        "mapper_ap_swapped_reasoning": average_precision(labels, swapped),
        "mapper_p_fake_range_one_reasoning": [float(fixed.min()), float(fixed.max())],
    }
    print(f"1. mapper P(fake) after each image's own reasoning: AP {result['mapper_ap_own_reasoning']:.3f}; after the "
          f"other class's reasoning: AP {result['mapper_ap_swapped_reasoning']:.3f}; one reasoning for every image: "
          f"P(fake) {fixed.min():.4f}..{fixed.max():.4f}")

    # 2. the first answer token where a real and a fake answer differ, predicted from the prompt and the image alone
    tokenizer = processor.tokenizer
    real_ids = tokenizer(" " + real_text, add_special_tokens=False)["input_ids"]
    fake_ids = tokenizer(" " + fake_text, add_special_tokens=False)["input_ids"]
    k = next(i for i, (a, b) in enumerate(zip(real_ids, fake_ids)) if a != b)
    prefix = torch.tensor(processor.prompt_ids() + real_ids[:k])
    probe = EncodedSample(prefix, torch.full_like(prefix, IGNORE_INDEX), len(prefix) - 1)
    with torch.no_grad():
        logits = model(images, [probe] * len(records)).logits[:, -1]
    deciding = logits[:, fake_ids[k]] - logits[:, real_ids[k]]
    result["deciding_token"] = [tokenizer.decode([real_ids[k]]), tokenizer.decode([fake_ids[k]])]
    result["deciding_token_index"] = k
    result["deciding_token_ap"] = average_precision(labels, deciding)
    print(f"2. the answers first differ at answer token {k} ({result['deciding_token'][0]!r} real, "
          f"{result['deciding_token'][1]!r} fake); AP of its logits from the image: {result['deciding_token_ap']:.3f}")

    # 3. gradients on one batch of training samples, through the visual path (projectors + fusion) and the LM
    visual = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("visual.")]
    language = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("visual.")]
    batch = records[: args.batch_size // 2] + records[-(args.batch_size - args.batch_size // 2):]
    samples = [processor.encode_training(r.target_response()) for r in batch]
    batch_images = torch.stack([processor.image_processor(load_rgb(r.image_path)) for r in batch])
    model.train()
    out = model(batch_images, samples)
    answer_tokens = int(sum((s.labels != IGNORE_INDEX).sum() for s in samples))
    probe_logits = model(batch_images, [probe] * len(batch)).logits[:, -1]
    targets = torch.tensor([(fake_ids if r.label else real_ids)[k] for r in batch])
    deciding_share = F.cross_entropy(probe_logits.float(), targets, reduction="sum") / answer_tokens
    result["grad_visual"] = {"lm_loss": _grad_norm(out.lm_loss, visual), "mapper_ce": _grad_norm(out.cls_loss, visual),
                             "deciding_token_share_of_lm_loss": _grad_norm(deciding_share, visual)}
    result["grad_language_model"] = {"lm_loss": _grad_norm(out.lm_loss, language),
                                     "mapper_ce": _grad_norm(out.cls_loss, language)}
    result["losses"] = {"lm": out.lm_loss.item(), "mapper_ce": out.cls_loss.item(),
                        "deciding_token_share_of_lm": deciding_share.item(), "answer_tokens_per_sample":
                        answer_tokens / len(batch)}
    model.eval()
    g = result["grad_visual"]
    print(f"3. gradient norms on the visual path (projectors + fusion): LM loss {g['lm_loss']:.2e}, mapper CE "
          f"{g['mapper_ce']:.2e}, the deciding token's share of the LM loss {g['deciding_token_share_of_lm_loss']:.2e} "
          f"(1 of {answer_tokens / len(batch):.0f} answer tokens); losses LM {result['losses']['lm']:.4f}, "
          f"mapper CE {result['losses']['mapper_ce']:.4f}")

    # 4. logit scale where the mapper reads
    result["logit_std"] = float(out.logits.detach().float().std())
    result["mean_abs_binary_logit_difference"] = float(out.binary_logits.detach().diff(dim=1).abs().mean())
    print(f"4. LM logit std {result['logit_std']:.3f}; mean |real - fake| logit / T at the mapper "
          f"{result['mean_abs_binary_logit_difference']:.3f}")
    if args.visual_probe_steps:
        if args.train is None:
            parser.error("--visual-probe-steps needs --train (the images the probe trains on)")
        result["visual_probe"] = visual_probe(model.visual, args.train, images, labels, processor,
                                              args.visual_probe_steps, args.batch_size, args.lr)
        print(f"5. the visual path alone (projectors + fusion re-initialised, direct CE on pooled tokens): test AP "
              f"{result['visual_probe']['ap']:.3f} after {args.visual_probe_steps} steps")
    print(json.dumps(result))
    return 0


def visual_probe(visual, train_file: str, test_images, test_labels, processor, steps: int, batch_size: int,
                 lr: float) -> dict:
    import copy

    torch.manual_seed(0)
    encoder = copy.deepcopy(visual).train()
    for module in encoder.modules():  # re-initialise what FakeReasoning trains; the frozen branches stay as they are
        if hasattr(module, "reset_parameters") and any(p.requires_grad for p in module.parameters(recurse=False)):
            module.reset_parameters()
    readout = torch.nn.Linear(encoder.width, 1)
    records = read_annotations(train_file)
    images = torch.stack([processor.image_processor(load_rgb(r.image_path)) for r in records])
    labels = torch.tensor([r.label for r in records], dtype=torch.float32)
    params = [p for p in encoder.parameters() if p.requires_grad] + list(readout.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    order = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(len(records), (batch_size,), generator=order)
        logits = readout(encoder(images[batch]).mean(1)).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    encoder.eval()
    with torch.no_grad():
        scores = readout(encoder(test_images).mean(1)).squeeze(-1)
    return {"steps": steps, "ap": average_precision(test_labels, scores), "last_loss": loss.item()}


if __name__ == "__main__":
    sys.exit(main())
