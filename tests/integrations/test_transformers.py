"""attnzoo.integrations.transformers (issue 36): zoo backbones in Hugging Face transformers' RT-DETR, Mask2Former and
UperNet, through the whole cycle on the CPU at tiny widths: the configs without a network call, the three
architectures on two zoo families each, transformers' Trainer on the synthetic COCO set (RT-DETR, COCO mAP through
the image processor's post-processing) and the ADE-style set (UperNet, mIoU), save_pretrained, and from_pretrained in
a fresh process (after the bridge's import: the same outputs; before it: transformers' error).

The Hub is kept out: HF_HUB_OFFLINE=1 for the module, and the no-network test refuses every socket.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

if find_spec("transformers") is None:
    pytest.skip("the transformers bridge needs transformers: pip install 'attnzoo[hf]'", allow_module_level=True)

IMG = 64
# Tiny widths through the zoo constructors' own arguments (model_kwargs), one entry per family used here.
TINY = {
    "biformer_tiny": dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 128), qk_dims=(16, 32, 64, 128), head_dim=16),
    "agent_swin_tiny": dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
    "transnext_micro": dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1)),
    "agent_pvt_tiny": dict(embed_dims=(16, 32, 64, 128), num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1)),
}
MASK2FORMER_TINY = dict(feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64,
                        encoder_layers=1, decoder_layers=2, num_attention_heads=2, dim_feedforward=64, num_queries=10)
UPERNET_TINY = dict(hidden_size=32, auxiliary_channels=16)
SEG_STEPS = 8
ADE_CLASSES = 150  # ADE20K's numbering (tools/make_ade_seg.py), 0 = "other" reduced to the ignore index 255


@pytest.fixture(scope="module", autouse=True)
def offline():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def hf():
    from attnzoo.integrations import transformers as bridge

    # an mm tool run in this worker (tools/_mm_entry sets LOCAL_RANK) must not make the Trainer start torch.distributed
    with pytest.MonkeyPatch.context() as patch:
        for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            patch.delenv(name, raising=False)
        yield bridge


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


# ---------------------------------------------------------------- configs, no network


def test_backbone_config_without_network(hf, monkeypatch):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    import huggingface_hub.constants
    import timm
    from transformers import RTDetrConfig, RTDetrForObjectDetection, TimmBackboneConfig

    config = hf.backbone_config("biformer_tiny", out_indices=(1, 2, 3))
    assert isinstance(config, TimmBackboneConfig) and config.model_type == "attnzoo_backbone"
    assert config.out_indices == [1, 2, 3]
    real = timm.create_model("biformer_tiny", features_only=True, out_indices=(1, 2, 3))  # a real build, no weights
    assert hf.backbone_channels(config) == real.feature_info.channels()
    assert hf.backbone_strides(config) == real.feature_info.reduction()

    detr = hf.rt_detr_config("biformer_tiny", num_labels=3, **_detr_tiny())
    assert list(detr.encoder_in_channels) == real.feature_info.channels()
    assert list(detr.feat_strides) == [8, 16, 32]
    model = RTDetrForObjectDetection(detr).eval()
    with torch.no_grad():
        out = model(pixel_values=torch.randn(1, 3, IMG, IMG))
    assert out.logits.shape == (1, detr.num_queries, 3)
    assert calls == []
    # The plain route asks the Hub whether a repository "biformer_tiny" exists: the refused socket shows it (the
    # module's offline mode lifted for this one call; the socket still refuses).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(Exception):  # noqa: B017 (whatever huggingface_hub makes of a refused connection)
        RTDetrConfig(backbone="biformer_tiny")
    assert calls


def test_mistakes_are_one_zoo_error_each(hf):
    from attnzoo.errors import ZooError

    cases = [
        (lambda: hf.backbone_config("biformer_tinyy"), "biformer_tiny"),
        (lambda: hf.backbone_config("biformer_tiny", out_indices=(3, 1)), "increasing order"),
        (lambda: hf.backbone_config("biformer_tiny", out_indices=(1, 4)), "levels 0..3"),
        (lambda: hf.backbone_config("biformer_tiny", embed_dims=(8, 16, 32, 64)), "embed_dim"),
        (lambda: hf.rt_detr_config("biformer_tiny", encoder_in_channels=[512, 1024, 2048]), "[128, 256, 512]"),
        (lambda: hf.upernet_config("biformer_tiny", out_indices=(2, 3)), "auxiliary head"),
    ]
    for make, hint in cases:
        with pytest.raises(ZooError) as err:
            make()
        assert hint in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_model_kwargs_and_card_kwargs_reach_the_backbone(hf):
    config = hf.backbone_config("agent_pvt_tiny", **TINY["agent_pvt_tiny"])
    assert hf.backbone_channels(config) == [16, 32, 64, 128]
    assert config.model_kwargs["depths"] == [1, 1, 1, 1]  # JSON's form: the config equals its reloaded self
    # A card's model_kwargs apply as in attnzoo.create_model (focalnet_large_fl4's card sets them).
    import attnzoo

    with torch.device("meta"):
        built = attnzoo.create_model("focalnet_large_fl4", features_only=True, pretrained=False)
    assert hf.backbone_channels(hf.backbone_config("focalnet_large_fl4")) == built.feature_info.channels()


# ---------------------------------------------------------------- the three architectures, two families each


def _detr_tiny() -> dict:
    from hf_detection_train import DETECTOR_SIZES

    return dict(DETECTOR_SIZES["tiny"])


@pytest.mark.parametrize("arch, family", [
    ("rt_detr", "biformer_tiny"), ("rt_detr", "transnext_micro"),
    ("mask2former", "agent_swin_tiny"), ("mask2former", "agent_pvt_tiny"),
    ("upernet", "biformer_tiny"), ("upernet", "agent_swin_tiny"),
])
def test_architecture_on_family(hf, arch, family):
    from transformers import (
        Mask2FormerForUniversalSegmentation,
        RTDetrForObjectDetection,
        UperNetForSemanticSegmentation,
    )

    kwargs = TINY[family]
    x = torch.randn(2, 3, IMG, IMG)
    torch.manual_seed(0)
    if arch == "rt_detr":
        model = RTDetrForObjectDetection(hf.rt_detr_config(family, model_kwargs=kwargs, num_labels=3, **_detr_tiny()))
        with torch.no_grad():
            out = model.eval()(pixel_values=x)
        shapes = {"logits": (2, model.config.num_queries, 3), "pred_boxes": (2, model.config.num_queries, 4)}
    elif arch == "mask2former":
        model = Mask2FormerForUniversalSegmentation(hf.mask2former_config(family, model_kwargs=kwargs, num_labels=5,
                                                                          **MASK2FORMER_TINY))
        with torch.no_grad():
            out = model.eval()(pixel_values=x)
        shapes = {"class_queries_logits": (2, 10, 6), "masks_queries_logits": (2, 10, IMG // 4, IMG // 4)}
    else:
        model = UperNetForSemanticSegmentation(hf.upernet_config(family, model_kwargs=kwargs, num_labels=7,
                                                                 **UPERNET_TINY))
        with torch.no_grad():
            out = model.eval()(pixel_values=x)
        shapes = {"logits": (2, 7, IMG, IMG)}
    assert sum(isinstance(module, hf.ZooBackbone) for module in model.modules()) == 1
    for key, shape in shapes.items():
        assert tuple(out[key].shape) == shape, key
        assert torch.isfinite(out[key]).all()


# ---------------------------------------------------------------- the cycle: train, evaluate, save, reload


@pytest.fixture(scope="module")
def coco(workdir):
    import make_coco_det

    return make_coco_det.make(workdir / "coco", num_train=8, num_val=4, height=IMG, width=IMG, num_classes=2,
                              max_objects=2, min_size=16, max_size=40, seed=0)


@pytest.fixture(scope="module")
def ade(workdir):
    import make_ade_seg

    return make_ade_seg.make(workdir / "ade", num_train=8, num_val=4, height=IMG, width=IMG, num_classes=2,
                             max_objects=2, min_size=14, max_size=36, seed=0)


@pytest.fixture(scope="module")
def detection(hf, coco, workdir):
    """RT-DETR on a tiny BiFormer trained by transformers' Trainer, evaluated, saved."""
    import hf_detection_train as H

    processor = H.processor_for("biformer_tiny", IMG)
    train_set = H.CocoDetectionSet(coco, "train", processor)
    val_set = H.CocoDetectionSet(coco, "val", processor, train_set.categories)
    model = H.detector("biformer_tiny", len(train_set.categories), "tiny", model_kwargs=TINY["biformer_tiny"])
    losses = H.train(model, train_set, workdir / "detr_run", steps=12, batch_size=4, learning_rate=1e-3)
    detections = H.predict(model, val_set)
    scores = H.coco_map(val_set, detections)
    model.save_pretrained(workdir / "detr")
    pixels = torch.stack([val_set[i]["pixel_values"] for i in range(len(val_set))])
    with torch.no_grad():
        logits = model.eval()(pixel_values=pixels).logits
    torch.save({"pixels": pixels, "logits": logits}, workdir / "detr_io.pt")
    return dict(losses=losses, scores=scores, detections=detections, val_set=val_set, H=H)


def test_trainer_trains_rt_detr_and_coco_map(detection):
    losses = detection["losses"]
    print("RT-DETR (tiny BiFormer) losses:", [round(v, 2) for v in losses], "COCO:", detection["scores"])
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    scores = detection["scores"]
    assert all(0.0 <= scores[k] <= 1.0 for k in ("AP", "AP50", "AP75"))
    # The post-processed boxes are in pixels of the original image, and the evaluation scores the truth as perfect.
    val_set, H = detection["val_set"], detection["H"]
    boxes = np.array([d["bbox"] for d in detection["detections"]])
    assert len(boxes) == len(val_set) * 30  # every query of every image (threshold 0)
    assert boxes[:, 0].min() >= -1 and (boxes[:, 0] + boxes[:, 2]).max() <= IMG + 1
    truth = [dict(image_id=a["image_id"], category_id=a["category_id"], bbox=a["bbox"], score=1.0)
             for a in val_set.coco["annotations"]]
    assert H.coco_map(val_set, truth)["AP"] == pytest.approx(1.0)
    shifted = [dict(t, bbox=[t["bbox"][0] + t["bbox"][2] / 2, *t["bbox"][1:]]) for t in truth]
    assert H.coco_map(val_set, shifted)["AP"] < 0.5


class AdeSegmentationSet(torch.utils.data.Dataset):
    def __init__(self, root: Path, split: str, processor):
        self.images = sorted((root / "images" / split).glob("*.jpg"))
        self.labels = [root / "annotations" / split / f"{p.stem}.png" for p in self.images]
        self.processor = processor

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        from PIL import Image

        encoded = self.processor(images=Image.open(self.images[index]).convert("RGB"),
                                 segmentation_maps=Image.open(self.labels[index]), return_tensors="pt")
        return {"pixel_values": encoded["pixel_values"][0], "labels": encoded["labels"][0]}


def seg_collate(batch):
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def mean_iou(predictions: list[torch.Tensor], truths: list[torch.Tensor], num_classes: int, ignore: int = 255):
    """mmseg's mIoU: per-class IoU over the whole set, averaged over the classes the truth contains."""
    intersection, union, present = (np.zeros(num_classes) for _ in range(3))
    for pred, truth in zip(predictions, truths):
        keep = truth != ignore
        pred, truth = pred[keep].numpy(), truth[keep].numpy()
        intersection += np.bincount(pred[pred == truth], minlength=num_classes)
        p, t = np.bincount(pred, minlength=num_classes), np.bincount(truth, minlength=num_classes)
        union += p + t - np.bincount(pred[pred == truth], minlength=num_classes)
        present += t
    return float(np.mean(intersection[present > 0] / union[present > 0]))


@pytest.fixture(scope="module")
def segmentation(hf, ade, workdir):
    """UperNet on a tiny Agent-Swin (a Swin skeleton: buffers made by its constructor) trained, evaluated, saved."""
    import hf_detection_train as H
    from transformers import SegformerImageProcessor, Trainer, TrainingArguments, UperNetForSemanticSegmentation

    processor = SegformerImageProcessor(size={"height": IMG, "width": IMG}, do_reduce_labels=True,
                                        **hf.image_processor_kwargs("agent_swin_tiny"))
    train_set = AdeSegmentationSet(ade, "training", processor)
    val_set = AdeSegmentationSet(ade, "validation", processor)
    torch.manual_seed(0)
    model = UperNetForSemanticSegmentation(hf.upernet_config("agent_swin_tiny", model_kwargs=TINY["agent_swin_tiny"],
                                                             num_labels=ADE_CLASSES, **UPERNET_TINY))
    args = TrainingArguments(output_dir=str(workdir / "seg_run"), max_steps=SEG_STEPS, per_device_train_batch_size=4,
                             learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
                             report_to=[], use_cpu=True, seed=0, remove_unused_columns=False, disable_tqdm=True)
    log = H._LossLog()
    Trainer(model=model, args=args, train_dataset=train_set, data_collator=seg_collate,
            callbacks=[log.callback]).train()
    batch = seg_collate([val_set[i] for i in range(len(val_set))])
    with torch.no_grad():
        outputs = model.eval()(pixel_values=batch["pixel_values"])
    predictions = processor.post_process_semantic_segmentation(outputs, target_sizes=[(IMG, IMG)] * len(val_set))
    truths = list(batch["labels"])
    model.save_pretrained(workdir / "upernet")
    torch.save({"pixels": batch["pixel_values"], "logits": outputs.logits}, workdir / "upernet_io.pt")
    return dict(losses=log.losses, miou=mean_iou(predictions, truths, ADE_CLASSES),
                perfect=mean_iou(truths, truths, ADE_CLASSES), predictions=predictions)


def test_trainer_trains_upernet_and_miou(segmentation):
    losses = segmentation["losses"]
    print("UperNet (tiny Agent-Swin) losses:", [round(v, 3) for v in losses], "mIoU:", segmentation["miou"])
    assert len(losses) == SEG_STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    assert segmentation["perfect"] == 1.0
    assert 0.0 <= segmentation["miou"] < 1.0
    assert segmentation["predictions"][0].shape == (IMG, IMG)


RELOAD = textwrap.dedent("""
    import json, sys
    import attnzoo, attnzoo.integrations

    report = {"lazy": "transformers" not in sys.modules}  # import attnzoo leaves transformers alone
    import torch
    from pathlib import Path
    from transformers import RTDetrForObjectDetection, UperNetForSemanticSegmentation

    work = Path(sys.argv[1])
    try:  # import attnzoo alone: transformers does not know the backbone's model type
        RTDetrForObjectDetection.from_pretrained(work / "detr")
    except Exception as err:
        report["without_import"] = f"{type(err).__name__}: {err}"
    import attnzoo.integrations.transformers  # noqa: F401
    for name, cls in (("detr", RTDetrForObjectDetection), ("upernet", UperNetForSemanticSegmentation)):
        model = cls.from_pretrained(work / name).eval()
        saved = torch.load(work / f"{name}_io.pt")
        with torch.no_grad():
            logits = model(pixel_values=saved["pixels"]).logits
        report[name] = (logits - saved["logits"]).abs().max().item()
    print(json.dumps(report))
""")


def test_from_pretrained_in_a_fresh_process(detection, segmentation, workdir):
    out = subprocess.run([sys.executable, "-c", RELOAD, str(workdir)], capture_output=True, text=True,
                         cwd=workdir, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print("reload:", report)
    assert report["lazy"] is True
    assert "attnzoo_backbone" in report["without_import"]
    # max |difference| of the logits; not bit-equal when the child runs another thread count than this worker
    assert report["detr"] <= 1e-5
    assert report["upernet"] <= 1e-5
