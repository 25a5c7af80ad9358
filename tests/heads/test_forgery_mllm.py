"""FakeReasoning end to end with tiny random configurations (open_clip ViT + timm DINOv2-style ViT, LLaMA LM from a
config, word-level tokenizer built here): shapes, the probability mapper, the loss, generation, LoRA, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("open_clip")

from attnzoo.heads.forgery.data import AnnotationError, read_annotations, read_mmfr_cot, read_mmfr_evaluation_set  # noqa: E402
from attnzoo.heads.forgery.mllm import IMAGE_TOKEN_INDEX, convert_official_fakereasoning_state_dict  # noqa: E402
from attnzoo.heads.forgery.prompt import MissingConclusionError, build_response, parse_conclusion  # noqa: E402
from attnzoo.heads.forgery.tiny import tiny_fakereasoning  # noqa: E402

IMAGE_SIZE = 56  # 4 x 4 patches of 14 in both branches
RESPONSES = [
    build_response("The lighting is consistent and the edges are smooth and natural.", 0),
    build_response("The texture is anomalous and the edges show blocky artefacts.", 1),
]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_fakereasoning(RESPONSES, width=64, image_size=IMAGE_SIZE).eval()


@pytest.fixture(scope="module")
def batch(model):
    torch.manual_seed(1)
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    return images, [model.processor.encode_training(r) for r in RESPONSES]


def test_shapes_through_the_whole_forward(model, batch):
    images, samples = batch
    high = model.visual.high_level(images)
    low = model.visual.low_level(images)
    assert high.tokens.shape == (2, 16, 64) and high.attn_map is None
    assert low.tokens.shape == (2, 16, 64) and low.attn_map.shape == (2, 4, 17, 17)
    torch.testing.assert_close(low.attn_map.sum(-1), torch.ones(2, 4, 17))
    image_tokens = model.visual(images)
    assert image_tokens.shape == (2, 16, 64)
    out = model(images, samples)
    longest = max(len(s.input_ids) for s in samples) - 1 + 16  # the placeholder becomes 16 image tokens
    assert out.logits.shape == (2, longest, len(model.processor.tokenizer))
    assert out.binary_logits.shape == (2, 2) and out.probability_fake.shape == (2,)


def test_answer_position_reads_the_word_after_the_conclusion_prompt(model, batch):
    _, samples = batch
    tokenizer = model.processor.tokenizer
    real_id, fake_id = model.mapper.token_ids
    for sample, label in zip(samples, (0, 1)):
        assert sample.label == label
        assert int(sample.input_ids[sample.answer_position + 1]) == (real_id, fake_id)[label]
        prefix = [int(i) for i in sample.input_ids[: sample.answer_position + 1] if i != IMAGE_TOKEN_INDEX]
        assert tokenizer.decode(prefix).endswith("<CONCLUSION>This image is ")


def test_inference_reads_p_fake_where_training_taught_the_answer(model, batch):
    """generate() reads P(fake) after the generated text: the ids it builds must end exactly where a training sample
    of that text is read (the tiny tokenizer has whitespace tokens, so that is the ' ' after 'is', not 'is'), and the
    probability must equal the teacher-forced one."""
    images, samples = batch
    for index, response in enumerate(RESPONSES[:2]):
        trained = model.processor.encode_training(response)
        prefix, found = model.processor.encode_conclusion_prefix(response)
        assert found
        assert prefix.input_ids.tolist() == trained.input_ids[: trained.answer_position + 1].tolist()
        assert prefix.answer_position == trained.answer_position
        with torch.no_grad():
            teacher_forced = model(images[index:index + 1], [trained]).probability_fake
            read_after_text = model(images[index:index + 1], [prefix]).probability_fake
        torch.testing.assert_close(read_after_text, teacher_forced)


def test_probability_is_softmax_of_the_two_token_logits_over_temperature(model, batch):
    images, samples = batch
    out = model(images, samples)
    real_id, fake_id = model.mapper.token_ids
    assert model.mapper.temperature == 10.0
    for row, sample in enumerate(samples):
        position = sample.answer_position + 16 - 1  # shifted by the spliced image tokens (right padding)
        pair = out.logits[row, position, [real_id, fake_id]] / 10.0
        torch.testing.assert_close(out.binary_logits[row], pair)
        torch.testing.assert_close(out.probability_fake[row], torch.softmax(pair, -1)[1])


def test_loss_is_lm_plus_classification_ce(model, batch):
    images, samples = batch
    out = model(images, samples)
    embeds, mask, labels, positions = model._splice(samples, model.visual(images), pad_left=False)
    reference = model.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.lm_loss, reference.loss)
    ce = F.cross_entropy(out.binary_logits, torch.tensor([0, 1]))
    torch.testing.assert_close(out.cls_loss, ce)
    torch.testing.assert_close(out.loss, reference.loss + ce)


def test_generation_returns_text_and_probability(model, batch):
    images, _ = batch
    verdicts = model.generate(images, max_new_tokens=6)
    assert len(verdicts) == 2
    for verdict in verdicts:
        assert isinstance(verdict.text, str) and 0.0 <= verdict.probability_fake <= 1.0
        assert verdict.label == int(verdict.probability_fake > 0.5)
    # P(fake) is the mapper read after "This image is" appended to (or found in) the generated text
    prefix, _ = model.processor.encode_conclusion_prefix(verdicts[0].text)
    again = model(images[:1], [prefix])
    assert again.probability_fake.item() == pytest.approx(verdicts[0].probability_fake, abs=1e-5)


def test_lora_trains_only_what_it_should():
    torch.manual_seed(0)
    model = tiny_fakereasoning(RESPONSES, width=64, image_size=IMAGE_SIZE).enable_lora(r=4, alpha=8, dropout=0.0)
    names = model.trainable_parameter_names()
    assert names and all(
        "lora_" in n or n.startswith(("visual.high_projector.", "visual.low_projector.", "visual.fusion.")) for n in names
    )
    assert any("lora_A" in n for n in names) and any(n.startswith("visual.fusion.attention_bias") for n in names)
    assert not any(n.startswith(("visual.high_level.", "visual.low_level.")) for n in names)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    samples = [model.processor.encode_training(r) for r in RESPONSES]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA B starts at zero: A only moves from the second step on
        optimizer.zero_grad()
        model.train()
        model(images, samples).loss.backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    # everything that moved is trainable; of the trainable ones only two biases stay put, because the softmax
    # ignores a shift that is the same for every key (their gradient is exactly zero, in the official module too)
    assert changed <= set(names)
    assert set(names) - changed == {"visual.fusion.k_proj.bias", "visual.fusion.attention_bias.reduce.bias"}
    assert all(p.grad is None for n, p in model.named_parameters() if n not in names)


def test_a_zoo_style_branch_without_attention_map_runs_unbiased():
    """Any features_only backbone can be the low-level branch; without a map the fusion is plain cross-attention."""
    import timm

    from attnzoo.heads.forgery.encoder import DualBranchEncoder, OpenCLIPTokens, TimmFeatureTokens
    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    open_clip = pytest.importorskip("open_clip")
    clip = open_clip.CLIP(**tiny_open_clip_config(image_size=IMAGE_SIZE))
    cnn = timm.create_model("resnet10t", pretrained=False, features_only=True, out_indices=(2,))
    encoder = DualBranchEncoder(OpenCLIPTokens(clip.visual), TimmFeatureTokens(cnn), width=64, dropout=0.0)
    assert encoder.low_level(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)).attn_map is None
    assert encoder(torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE)).shape == (1, 16, 64)


def test_official_checkpoint_names_convert(model, parity):
    official = {f"base_model.model.model.crossattention.{k}": v for k, v in parity("fakereasoning_fusion").state_dict.items()}
    for name in ("mm_projector", "dino_mm_projector"):
        official.update({f"base_model.model.model.{name}.{i}.{p}": torch.randn(64, 64) if p == "weight" else torch.randn(64)
                         for i in (0, 2) for p in ("weight", "bias")})
    converted = convert_official_fakereasoning_state_dict(official)
    assert {k.split(".")[1] for k in converted} == {"high_projector", "low_projector", "fusion"}
    # the tiny fusion has a 4-head map; the official one 16: check names and shapes against an official-sized one
    from attnzoo.heads.forgery.fusion import ForgeryAwareFusion

    fusion = ForgeryAwareFusion(64, 16, 256, 0.0)
    fusion.load_state_dict({k[len("visual.fusion."):]: v for k, v in converted.items() if k.startswith("visual.fusion.")})
    model.visual.high_projector.load_state_dict(
        {k[len("visual.high_projector."):]: v for k, v in converted.items() if k.startswith("visual.high_projector.")})


# ------------------------------------------------------------------------------------------------- bad inputs
def test_non_rgb_and_tiny_images_are_refused(model):
    from PIL import Image

    processor = model.processor.image_processor
    assert processor(Image.new("RGB", (80, 40))).shape == (3, IMAGE_SIZE, IMAGE_SIZE)  # padded to square
    for mode in ("L", "RGBA", "CMYK"):
        with pytest.raises(ValueError, match=r"convert\('RGB'\)"):
            processor(Image.new(mode, (64, 64)))
    with pytest.raises(ValueError, match="min_side"):
        processor(Image.new("RGB", (8, 8)))
    with pytest.raises(ValueError, match="RGB uint8"):
        processor(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        model.visual(torch.randn(1, 1, IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(ValueError, match="smaller than"):
        model.visual(torch.randn(1, 3, 8, 8))


def test_reasoning_without_conclusion_is_refused(model):
    with pytest.raises(MissingConclusionError, match="CONCLUSION"):
        model.processor.encode_training("<REASONING>The edges look irregular.</REASONING>")
    with pytest.raises(MissingConclusionError, match="neither"):
        parse_conclusion("<CONCLUSION>Hard to say.</CONCLUSION>")


def test_annotation_without_label_is_refused(tmp_path):
    good = {"image": "a.png", "label": "fake", "generator": "g", "reasoning": {"Irregular Image Edges": "blocky"}}
    path = tmp_path / "ann.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({"image": "b.png", "generator": "g"}) + "\n")
    with pytest.raises(AnnotationError, match=r"ann.jsonl:2: missing 'label'"):
        read_annotations(path)
    path.write_text(json.dumps(good) + "\n")
    (record,) = read_annotations(path)
    assert record.label == 1 and record.target_response().endswith("<CONCLUSION>This image is fake.</CONCLUSION>")
    path.write_text(json.dumps({**good, "response": "<REASONING>x</REASONING>"}) + "\n")
    with pytest.raises(MissingConclusionError):
        read_annotations(path)


def test_official_mmfr_formats(tmp_path):
    folder = tmp_path / "evaluation_sets" / "flux"
    folder.mkdir(parents=True)
    (folder / "flux_reasoning.json").write_text(json.dumps({
        "flux/0_real/a.png": {"Semantic Rationality": "fine", "High Image Quality": "sharp", "Consistent Lighting and Shadows": None},
        "flux/1_fake/b.png": {"Irregular Image Edges": "jagged"},
    }))
    real, fake = read_mmfr_evaluation_set(folder)
    assert (real.label, fake.label, real.generator) == (0, 1, "flux")
    assert real.reasoning_text == "sharp fine"  # sorted attribute order, None skipped (official eval.py)
    (folder / "flux_reasoning.json").write_text(json.dumps({"flux/x.png": {}}))
    with pytest.raises(AnnotationError, match="no label"):
        read_mmfr_evaluation_set(folder)
    cot = tmp_path / "cot.json"
    cot.write_text(json.dumps([{"image": "laion/1.jpg", "conversations": [
        {"from": "human", "value": "<image>\nIs this image real or fake?"},
        {"from": "gpt", "value": "<REASONING>ok</REASONING> <CONCLUSION>This image is real.</CONCLUSION>"}]}]))
    (record,) = read_mmfr_cot(cot, tmp_path)
    assert record.label == 0 and record.target_response().startswith("<REASONING>")


def test_timm_branch_gives_the_blocks_own_tokens_and_attention():
    """Pre-norm last-block tokens are what the final norm turns into forward_features; the recomputed map is the
    softmax the last block itself used (read from its attention dropout's input on the non-fused path)."""
    import timm

    from attnzoo.heads.forgery.encoder import TimmViTTokens

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=IMAGE_SIZE, embed_dim=64, depth=2,
                            num_heads=4, init_values=0.5)
    branch = TimmViTTokens(vit)
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    out = branch(images)
    with torch.no_grad():
        torch.testing.assert_close(vit.norm(out.tokens), vit.forward_features(images)[:, 1:])
        last = vit.blocks[-1].attn
        last.fused_attn = False
        seen = []
        handle = last.attn_drop.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        vit.forward_features(images)
        handle.remove()
    torch.testing.assert_close(out.attn_map, seen[0])
    with pytest.raises(ValueError, match="prefix tokens"):
        TimmViTTokens(timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=IMAGE_SIZE,
                                        embed_dim=64, depth=1, num_heads=4))


def test_open_clip_branch_is_the_penultimate_block_without_cls():
    """LLaVA's mm_vision_select_layer=-2: the second-to-last residual block's output, before ln_post, CLS dropped."""
    open_clip = pytest.importorskip("open_clip")
    from attnzoo.heads.forgery.encoder import OpenCLIPTokens
    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    torch.manual_seed(0)
    visual = open_clip.CLIP(**tiny_open_clip_config(image_size=IMAGE_SIZE, layers=3)).visual
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        patches = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.expand(2, 1, -1)
        x = visual.ln_pre(torch.cat([cls, patches], dim=1) + visual.positional_embedding)
        for block in visual.transformer.resblocks[:2]:  # blocks 0 and 1 of 3
            x = block(x)
    torch.testing.assert_close(OpenCLIPTokens(visual)(images).tokens, x[:, 1:])


def test_zoo_biformer_as_the_low_level_branch():
    """A zoo BiFormer (stage 3, stride 16) gives the keys/values; it has no attention map, so the fusion is unbiased."""
    import timm

    import attnzoo.backbones  # noqa: F401  (registers the zoo families with timm)
    from attnzoo.heads.forgery.encoder import DualBranchEncoder, OpenCLIPTokens, TimmFeatureTokens
    from attnzoo.heads.forgery.tiny import tiny_open_clip_config

    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    clip = open_clip.CLIP(**tiny_open_clip_config(image_size=112, patch_size=16))
    biformer = timm.create_model("biformer_tiny", pretrained=False, features_only=True, out_indices=(2,))
    encoder = DualBranchEncoder(OpenCLIPTokens(clip.visual), TimmFeatureTokens(biformer), width=64, dropout=0.0)
    images = torch.randn(1, 3, 112, 112)
    low = encoder.low_level(images)
    assert low.tokens.shape == (1, 49, 256) and low.attn_map is None
    assert encoder(images).shape == (1, 49, 64)


def test_the_tiny_random_lm_learns_only_when_its_own_weights_train():
    """The tiny LM has random weights. Under LoRA its output layer and final norm stay frozen, so at the mapper's
    position |logit(fake) - logit(real)| / T can never exceed ||w_fake - w_real|| * sqrt(width) / T (the RMS-normed
    hidden state has norm sqrt(width)): about 0.2, P(fake) within 0.45..0.55. Trained in full (the tiny default), the
    same 80 steps fit the answers and the mapper; under LoRA they barely move."""
    from attnzoo.heads.forgery.builders import build_fakereasoning

    results = {}
    for regime in ("lora", "full"):
        torch.manual_seed(0)
        model = build_fakereasoning(True, IMAGE_SIZE, RESPONSES, regime).train()
        images = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
        samples = [model.processor.encode_training(RESPONSES[i % 2]) for i in range(4)]
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
        for _ in range(80):
            out = model(images, samples)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
        results[regime] = (out.lm_loss.item(), out.cls_loss.item(), float(out.binary_logits.detach().diff(dim=1).abs().max()))
        if regime == "lora":
            head = model.language_model.get_output_embeddings().weight
            real_id, fake_id = model.mapper.token_ids
            cap = float((head[fake_id] - head[real_id]).norm()) * 64**0.5 / model.mapper.temperature
            assert not head.requires_grad and cap < 0.3
            assert results["lora"][2] <= cap + 1e-4
    print(results)
    lm_lora, ce_lora, _ = results["lora"]
    lm_full, ce_full, _ = results["full"]
    assert lm_full < 1.5 and ce_full < 0.5
    assert lm_lora > 3.5 and ce_lora > 0.68
