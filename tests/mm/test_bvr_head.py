"""RelationNet++ (BVR) on mmdet 3.x: the released configs' heads against the official key manifests, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mmdet.registry import MODELS  # tests/mm/conftest.py skips this folder without mmdet
from mmdet.utils import register_all_modules
from mmengine.config import Config

import attnzoo.heads.detection  # noqa: F401  (registers BVRHead, KeypointHead, PointKptAssigner)
from attnzoo.heads.detection import checkpoint_head_type, convert_official_bvr_checkpoint

register_all_modules(init_default_scope=False)
REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests/fixtures"
RELEASED = {  # our config -> the official config its head must match key for key
    "retinanet-bvr_r50_fpn_1x_coco": "retinanet_r50_fpn_relation_coco_1x",
    "retinanet-bvr_x101-64x4d-dcn_fpn_ms-2x_coco": "retinanet_x101_dcn_fpn_relation_coco_2x",
    "fcos-bvr_x101-64x4d-dcn_fpn_ms-2x_coco": "fcos_x101_dcn_fpn_relation_coco_2x",
    "atss-bvr_x101-64x4d-dcn_fpn_ms-2x_coco": "atss_x101_dcn_fpn_relation_coco_2x",
}


@pytest.mark.parametrize("config", sorted(RELEASED))
def test_released_configs_have_the_official_head_keys(config):
    """The official BVR heads' state-dict keys and shapes (official constructors, released arguments) are ours."""
    manifest = json.loads((FIXTURES / "bvr_official_manifests.json").read_text())[RELEASED[config]]
    cfg = Config.fromfile(str(REPO / "configs/bvr" / f"{config}.py"))
    head = dict(cfg.model.bbox_head, train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    with torch.device("meta"):  # the head as the detector builds it (backbone and neck are mmdet's own)
        ours = {f"bbox_head.{k}": list(v.shape) for k, v in MODELS.build(head).state_dict().items()}
    assert ours == manifest
    # an official-layout state dict of that shape passes the conversion check and names its head
    official = {k: torch.empty(0) for k in manifest}
    assert convert_official_bvr_checkpoint(official).keys() == manifest.keys()
    assert checkpoint_head_type(official) == f"BVRHead over {cfg.model.bbox_head.bbox_head_cfg.type}"


_SMALL = []


def _small_bvr(head_type="RetinaHead"):
    if not _SMALL:  # the CPU config's head (read once)
        _SMALL.append(Config.fromfile(str(REPO / "configs/bvr/retinanet-bvr_r18-mini_fpn_coco-synth.py")))
    model = _SMALL[0].model
    head = json.loads(json.dumps(dict(model.bbox_head.to_dict(), train_cfg=model.train_cfg.to_dict(),
                                      test_cfg=model.test_cfg.to_dict())))
    if head_type == "FCOSHead":
        head["bbox_head_cfg"] = dict(type="FCOSHead", num_classes=80, in_channels=32, feat_channels=32,
                                     stacked_convs=2)
    return head


def test_unknown_keypoint_type_names_it_and_the_known_ones():
    head = _small_bvr()
    head["keypoint_head_cfg"]["head_types"] = ["top_left_corner", "centre"]
    with pytest.raises(ValueError, match=r"unknown keypoint type\(s\) \['centre'\].*'bottom_right_corner', 'center'"):
        MODELS.build(head)


def test_branch_types_missing_from_the_keypoint_head_name_both():
    head = _small_bvr()
    head["keypoint_head_cfg"]["head_types"] = ["top_left_corner", "bottom_right_corner"]
    with pytest.raises(ValueError, match=r"cls_keypoint_cfg.keypoint_types: unknown keypoint type\(s\) \['center'\]; "
                                         r"keypoint_head_cfg.head_types=\['top_left_corner', 'bottom_right_corner'\]"):
        MODELS.build(head)


def test_unsupported_wrapped_head_is_named():
    head = _small_bvr()
    head["bbox_head_cfg"] = dict(type="GFLHead", num_classes=80, in_channels=32, feat_channels=32, stacked_convs=1,
                                 anchor_generator=dict(type="AnchorGenerator", ratios=[1.0], octave_base_scale=8,
                                                       scales_per_octave=1, strides=[8, 16, 32, 64, 128]))
    with pytest.raises(ValueError, match="BVRHead wraps RetinaHead, FCOSHead, ATSSHead .*got GFLHead"):
        MODELS.build(head)


@pytest.fixture(scope="module")
def retina_bvr():
    return MODELS.build(_small_bvr())


def test_checkpoint_of_another_head_type_names_both(retina_bvr):
    fcos = MODELS.build(_small_bvr("FCOSHead"))
    with pytest.raises(ValueError, match="holds a BVRHead over FCOSHead, this model's head is BVRHead over RetinaHead"):
        retina_bvr.load_state_dict(fcos.state_dict())
    plain = {k[len("bbox_head."):]: v for k, v in retina_bvr.state_dict().items() if k.startswith("bbox_head.")}
    with pytest.raises(ValueError, match="holds a plain RetinaHead, this model's head is BVRHead over RetinaHead"):
        retina_bvr.load_state_dict(plain)
    with pytest.raises(ValueError, match="not an official RelationNet\\+\\+ \\(BVR\\) checkpoint: its bbox_head is "
                                         "plain RetinaHead"):
        convert_official_bvr_checkpoint({f"bbox_head.{k}": v for k, v in plain.items()})
    # its own state loads strictly (through mmengine's loader too, which a config's load_from uses)
    from mmengine.runner.checkpoint import _load_checkpoint_to_model

    _load_checkpoint_to_model(retina_bvr, {"state_dict": retina_bvr.state_dict()}, strict=True)


def test_keypoint_head_and_transformer_get_gradients(retina_bvr):
    """One training step's loss reaches the keypoint head (through the heat maps and the key positions) and the
    attention, and an image without objects gives all-negative keypoint targets (the official assigner fails)."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    head = retina_bvr.train()
    head.zero_grad()
    feats = [torch.randn(2, 32, h, w) for h, w in ((12, 16), (6, 8), (3, 4), (2, 2), (1, 1))]
    samples = []
    for boxes in ([[8.0, 10.0, 60.0, 50.0]], []):
        sample = DetDataSample(metainfo=dict(img_shape=(96, 128), pad_shape=(96, 128), batch_input_shape=(96, 128)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                           labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(sample)
    losses = head.loss(feats, samples)
    assert set(losses) == {"kpt_loss_point_cls", "kpt_loss_point_offset", "bbox_loss_cls", "bbox_loss_bbox"}
    total = sum(v if torch.is_tensor(v) else sum(v) for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    for name in ("keypoint_head.keypoint_cls_heads.center.1.weight", "cls_transformer.decoder.0.in_proj_weight",
                 "reg_transformer.relative_positional_encoding.embedding_transform.0.conv.weight"):
        grad = dict(head.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    head.eval()
    with torch.no_grad():
        results = head.predict(feats, samples, rescale=False)
    assert len(results) == 2 and {"bboxes", "scores", "labels"} <= set(results[0].keys())


def test_zoo_convert_uses_the_card_key_mapping(retina_bvr, tmp_path, capsys):
    """`zoo convert SRC DST --model <bvr card>` runs the card's key mapping, then checks the fit: a mini-width BVR head
    is mapped (its keys reach the fit check under the card's names) and refused for the full-size card; a file whose
    bbox_head is not BVR is refused by the mapping itself."""
    from attnzoo.cli import main

    official = {f"bbox_head.{k}": v for k, v in retina_bvr.state_dict().items()}
    torch.save({"state_dict": official, "meta": {}}, tmp_path / "bvr.pth")
    assert main(["convert", str(tmp_path / "bvr.pth"), str(tmp_path / "bvr.safetensors"), "--model",
                 "retinanet_bvr_r50_coco"]) == 2
    err = capsys.readouterr().err
    assert "bbox_head.bbox_head.cls_convs.0.conv.weight checkpoint [32, 32, 3, 3] vs model [256, 256, 3, 3]" in err
    assert not (tmp_path / "bvr.safetensors").exists()
    plain = {k.replace("bbox_head.bbox_head.", "bbox_head."): v for k, v in official.items()
             if k.startswith("bbox_head.bbox_head.")}
    torch.save({"state_dict": plain}, tmp_path / "plain.pth")
    from attnzoo.weights import CheckpointError

    with pytest.raises(CheckpointError, match="its bbox_head is plain RetinaHead; expected BVRHead over"):
        from attnzoo.models import convert_checkpoint

        convert_checkpoint(tmp_path / "plain.pth", tmp_path / "plain.safetensors", "retinanet_bvr_r50_coco")
