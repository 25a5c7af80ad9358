"""RelationNet++'s BVR head for mmdet 3.x: a RetinaHead / FCOSHead / ATSSHead whose tower features attend to keypoints.

The wrapped head runs in two halves: its conv towers (``cls_convs``, ``reg_convs``), then its prediction convs. In
between, the classification features attend to the predicted centre keypoints and the regression features to the
two corners (``SimpleBVRTransformer``); the keypoints come from ``KeypointHead`` on the FPN features. Training adds the
keypoint losses (prefixed ``kpt_``) to the wrapped head's (prefixed ``bbox_``); prediction is the wrapped head's own
``predict_by_feat``. Written from microsoft/RelationNet2 (`code/models/dense_heads/bvr_head.py`,
`code/models/utils/bvr_utils.py`, commit 0930752; the official code patches the head's methods at run time, here
the two halves are functions per head class). Module names follow the official ones, so the official checkpoints'
keys are this head's keys (``convert_official_bvr_checkpoint`` checks them); a checkpoint of another head type is
refused when it loads, naming both heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from mmdet.models.dense_heads import ATSSHead, FCOSHead, RetinaHead
from mmdet.models.detectors import SingleStageDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmengine.config import ConfigDict
from mmengine.model import BaseModule

from .bvr_transformer import SimpleBVRTransformer
from .keypoint_head import check_keypoint_types

__all__ = ["BVR", "BVRHead", "SUPPORTED_HEADS", "checkpoint_head_type", "convert_official_bvr_checkpoint"]

SUPPORTED_HEADS = ("RetinaHead", "FCOSHead", "ATSSHead")
# the prediction conv that names each wrapped head type in a state dict
_HEAD_MARKERS = {"retina_cls.weight": "RetinaHead", "atss_cls.weight": "ATSSHead", "conv_centerness.weight": "FCOSHead"}
_BVR_PARTS = ("bbox_head.", "keypoint_head.", "cls_transformer.", "reg_transformer.")


# --------------------------------------------------------------------------------------- the wrapped head's halves


def _head_kind(head) -> str:
    # ATSSHead and RetinaHead are both AnchorHeads; FCOSHead is an AnchorFreeHead: test the leaves
    for cls in (ATSSHead, FCOSHead, RetinaHead):
        if isinstance(head, cls):
            return cls.__name__
    raise ValueError(f"BVRHead wraps {', '.join(SUPPORTED_HEADS)} (or subclasses); got {type(head).__name__}. "
                     f"Set bbox_head_cfg.type to one of those.")


def tower_features(head, feats: Sequence[torch.Tensor]):
    """The wrapped head's conv towers on each level -> (cls features, reg features)."""
    cls_feats, reg_feats = [], []
    for x in feats:
        cls_feat = reg_feat = x
        for layer in head.cls_convs:
            cls_feat = layer(cls_feat)
        for layer in head.reg_convs:
            reg_feat = layer(reg_feat)
        cls_feats.append(cls_feat)
        reg_feats.append(reg_feat)
    return cls_feats, reg_feats


def tower_predictions(head, kind: str, cls_feats, reg_feats) -> tuple[list[torch.Tensor], ...]:
    """The wrapped head's prediction convs -> exactly what its ``forward`` returns (per-level lists)."""
    outs = []
    for level, (cls_feat, reg_feat) in enumerate(zip(cls_feats, reg_feats)):
        if kind == "RetinaHead":
            outs.append((head.retina_cls(cls_feat), head.retina_reg(reg_feat)))
        elif kind == "ATSSHead":
            bbox = head.scales[level](head.atss_reg(reg_feat)).float()
            outs.append((head.atss_cls(cls_feat), bbox, head.atss_centerness(reg_feat)))
        else:  # FCOSHead, as its forward_single
            bbox = head.scales[level](head.conv_reg(reg_feat)).float()
            centerness = head.conv_centerness(reg_feat if head.centerness_on_reg else cls_feat)
            if head.norm_on_bbox:
                bbox = bbox.clamp(min=0)
                if not head.training:
                    bbox = bbox * head.strides[level]
            else:
                bbox = bbox.exp()
            outs.append((head.conv_cls(cls_feat), bbox, centerness))
    return tuple(list(parts) for parts in zip(*outs))


# ------------------------------------------------------------------------------------------------------ checkpoints


def checkpoint_head_type(state_dict: Mapping[str, object], prefix: str = "bbox_head.") -> str | None:
    """What a state dict holds under ``prefix``: 'BVRHead over <head>', 'plain <head>', or None when nothing."""
    keys = [k[len(prefix):] for k in state_dict if k.startswith(prefix)]
    if not keys:
        return None
    inner = {k[len("bbox_head."):] for k in keys if k.startswith("bbox_head.")}
    for marker, name in _HEAD_MARKERS.items():
        if marker in inner:
            return f"BVRHead over {name}"
    for marker, name in _HEAD_MARKERS.items():
        if marker in keys:
            return f"plain {name}"
    if "keypoint_head." in "".join(k[:14] for k in keys):
        return "BVRHead over an unknown head"
    return "an unknown head"


def convert_official_bvr_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official RelationNet2 (mmdet 2.x) detector state dict -> this package's (mmdet 3.x) keys.

    The module names were kept, so the keys carry over unchanged (backbone, neck, ``bbox_head.bbox_head.*``, the
    keypoint head, both transformers with their ``base_embedding`` grids); this checks that the file is a BVR
    detector before anything loads, with one ValueError naming what the file holds instead.
    """
    found = checkpoint_head_type(state_dict)
    if found is None or not found.startswith("BVRHead over ") or found.endswith("unknown head"):
        raise ValueError(f"not an official RelationNet++ (BVR) checkpoint: its bbox_head is "
                         f"{found or 'missing'}; expected BVRHead over one of {', '.join(SUPPORTED_HEADS)}.")
    return dict(state_dict)


# -------------------------------------------------------------------------------------------------------------- head


@MODELS.register_module()
class BVRHead(BaseModule):
    """Bridging visual representations over a dense head (arguments as the official ``BVRHead``).

    ``bbox_head_cfg``: the wrapped RetinaHead / FCOSHead / ATSSHead; ``keypoint_head_cfg``: a ``KeypointHead``;
    ``cls_keypoint_cfg`` / ``reg_keypoint_cfg``: which keypoint types each branch attends to and whether it does
    (``with_relation``); ``keypoint_pos``: the keypoint head reads the FPN features ('input') or a tower's;
    ``keypoint_cfg``: per-level top-k; ``feature_selection_cfg``: how key features are read (cross-level top-k);
    ``scale_position`` / ``scale_factor``: offsets are divided by each level's stride (True) or by the first
    level's (False, the released configs) times the factor; ``pos_cfg``: the location embedding's grid.
    ``train_cfg`` = dict(bbox=<the wrapped head's>, keypoint=<the keypoint head's>).
    """

    def __init__(self, bbox_head_cfg: dict, keypoint_head_cfg: dict, cls_keypoint_cfg: dict | None = None,
                 reg_keypoint_cfg: dict | None = None, keypoint_pos: str = "input", keypoint_cfg: dict | None = None,
                 feature_selection_cfg: dict | None = None, num_attn_heads: int = 8, scale_position: bool = True,
                 scale_factor: float = 1.0, with_relative_positional_encoding: bool = True,
                 with_appearance_relation: bool = True, shared_positional_encoding_inter: bool = True,
                 shared_positional_encoding_outer: bool = False, reg_cat_pos: bool = False,
                 pos_cfg: dict | None = None, train_cfg: dict | None = None, test_cfg: dict | None = None,
                 init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        self.keypoint_cfg = dict(keypoint_cfg or dict(max_keypoint_num=20, keypoint_score_thr=0.0))
        self.keypoint_cfg.pop("fuse_multi_level", None)  # official defaults' unused options
        self.keypoint_cfg.pop("max_fuse_keypoint_num", None)
        self.feature_selection_cfg = dict(feature_selection_cfg or {})
        self.cls_keypoint_cfg = dict(cls_keypoint_cfg or dict(keypoint_types=["center"], with_relation=False))
        self.reg_keypoint_cfg = dict(reg_keypoint_cfg or dict(
            keypoint_types=["top_left_corner", "bottom_right_corner"], with_relation=False))
        if keypoint_pos not in ("input", "cls", "reg"):
            raise ValueError(f"keypoint_pos {keypoint_pos!r}: use 'input', 'cls' or 'reg'")
        self.keypoint_pos = keypoint_pos

        bbox_head_cfg = dict(bbox_head_cfg)
        keypoint_head_cfg = dict(keypoint_head_cfg)
        # mmdet's heads read their cfgs by attribute; a detector hands ConfigDicts, a plain dict is made one here
        train_cfg = None if train_cfg is None else ConfigDict(train_cfg)
        test_cfg = None if test_cfg is None else ConfigDict(test_cfg)
        if train_cfg is not None:
            bbox_head_cfg.update(train_cfg=train_cfg.get("bbox"))
            keypoint_head_cfg.update(train_cfg=train_cfg.get("keypoint"))
        if test_cfg is not None:
            bbox_head_cfg.update(test_cfg=test_cfg)
        self.bbox_head = MODELS.build(bbox_head_cfg)
        self.head_kind = _head_kind(self.bbox_head)
        self.keypoint_head = MODELS.build(keypoint_head_cfg)
        known = self.keypoint_head.head_types
        for branch, cfg in (("cls_keypoint_cfg", self.cls_keypoint_cfg), ("reg_keypoint_cfg", self.reg_keypoint_cfg)):
            cfg["keypoint_types"] = check_keypoint_types(cfg["keypoint_types"], known, f"{branch}.keypoint_types",
                                                         f"keypoint_head_cfg.head_types={list(known)}")
        self.with_relation = bool(self.cls_keypoint_cfg["with_relation"] or self.reg_keypoint_cfg["with_relation"])
        self.scale_position = scale_position
        self.scale_factor = scale_factor
        self.num_heads = num_attn_heads

        channels = self.bbox_head.feat_channels
        common = dict(with_relative_positional_encoding=with_relative_positional_encoding,
                      with_appearance_relation=with_appearance_relation,
                      positional_cfg=pos_cfg if pos_cfg is not None else dict(base_size=[400, 400]),
                      shared_positional_encoding=shared_positional_encoding_inter)
        if self.cls_keypoint_cfg["with_relation"]:
            self.cls_transformer = SimpleBVRTransformer(2, channels, num_attn_heads,
                                                        len(self.cls_keypoint_cfg["keypoint_types"]), **common)
        if self.reg_keypoint_cfg["with_relation"]:
            shared = None
            if shared_positional_encoding_outer:
                if not hasattr(self, "cls_transformer"):
                    raise ValueError("shared_positional_encoding_outer=True shares the cls transformer's location "
                                     "embedding: set cls_keypoint_cfg.with_relation=True too")
                shared = self.cls_transformer.relative_positional_encoding
            self.reg_transformer = SimpleBVRTransformer(2, channels, num_attn_heads,
                                                        len(self.reg_keypoint_cfg["keypoint_types"]),
                                                        relative_positional_encoding=shared, cat_pos=reg_cat_pos,
                                                        **common)
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg

    @property
    def num_classes(self) -> int:
        return self.bbox_head.num_classes

    # ------------------------------------------------------------------------------------------------------ forward

    def forward_all(self, feats: Sequence[torch.Tensor]):
        """FPN features -> (the wrapped head's outputs, keypoint heat-map logits {type: [per level]}, offsets)."""
        cls_feats, reg_feats = tower_features(self.bbox_head, feats)
        source = {"input": feats, "cls": cls_feats, "reg": reg_feats}[self.keypoint_pos]
        keypoint_scores, keypoint_offsets = self.keypoint_head(source)
        if self.cls_keypoint_cfg["with_relation"]:
            cls_feats = self._relate(cls_feats, keypoint_scores, keypoint_offsets,
                                     self.cls_keypoint_cfg["keypoint_types"], self.cls_transformer)
        if self.reg_keypoint_cfg["with_relation"]:
            reg_feats = self._relate(reg_feats, keypoint_scores, keypoint_offsets,
                                     self.reg_keypoint_cfg["keypoint_types"], self.reg_transformer)
        return tower_predictions(self.bbox_head, self.head_kind, cls_feats, reg_feats), keypoint_scores, keypoint_offsets

    def forward(self, feats: Sequence[torch.Tensor]):
        """The wrapped head's outputs (what its ``predict_by_feat`` takes)."""
        return self.forward_all(feats)[0]

    def _relate(self, feats, keypoint_logits, keypoint_offsets, types, transformer):
        scores, positions, inds, locations = self.keypoint_head.get_keypoints_multihead(
            keypoint_logits, keypoint_offsets, types, **self.keypoint_cfg)
        key_features, key_positions = self.keypoint_head.get_keypoint_features(
            feats, scores, positions, inds, num_keypoint_head=len(types), **self.feature_selection_cfg)
        batch = feats[0].size(0)
        queries = [f.permute(0, 2, 3, 1) for f in feats]
        query_positions = [loc.reshape(*f.shape[-2:], -1)[None, ..., :2].expand(batch, *f.shape[-2:], -1)
                           for loc, f in zip(locations, feats)]
        strides = self.keypoint_head.strides
        scales = ([s * self.scale_factor for s in strides[:len(feats)]] if self.scale_position
                  else [strides[0] * self.scale_factor] * len(feats))
        refined = transformer(queries, query_positions, key_features, key_positions, scales)
        return [f.permute(0, 3, 1, 2) for f in refined]

    # --------------------------------------------------------------------------------------------- train and test

    def loss(self, x: Sequence[torch.Tensor], batch_data_samples) -> dict:
        batch_gt_instances, batch_gt_instances_ignore, batch_img_metas = unpack_gt_instances(batch_data_samples)
        bbox_outs, keypoint_scores, keypoint_offsets = self.forward_all(x)
        keypoint_losses = self.keypoint_head.loss_multihead(
            keypoint_scores, keypoint_offsets, [g.bboxes for g in batch_gt_instances],
            [g.labels for g in batch_gt_instances])
        bbox_losses = self.bbox_head.loss_by_feat(*bbox_outs, batch_gt_instances=batch_gt_instances,
                                                  batch_img_metas=batch_img_metas,
                                                  batch_gt_instances_ignore=batch_gt_instances_ignore)
        losses = {f"kpt_{k}": v for k, v in keypoint_losses.items()}
        losses.update({f"bbox_{k}": v for k, v in bbox_losses.items()})
        return losses

    def predict(self, x: Sequence[torch.Tensor], batch_data_samples, rescale: bool = False):
        """Detections per image (``InstanceData`` with bboxes, scores, labels), by the wrapped head's rules."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        return self.bbox_head.predict_by_feat(*self.forward(x), batch_img_metas=batch_img_metas, rescale=rescale)

    def loss_and_predict(self, x, batch_data_samples, proposal_cfg=None):
        losses = self.loss(x, batch_data_samples)
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        return losses, self.bbox_head.predict_by_feat(*self.forward(x), batch_img_metas=batch_img_metas,
                                                      cfg=proposal_cfg)

    # ------------------------------------------------------------------------------------------------ checkpoints

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        found = checkpoint_head_type(state_dict, prefix)
        mine = f"BVRHead over {self.head_kind}"
        if found is not None and found != mine and not found.endswith("unknown head"):
            raise ValueError(f"checkpoint head mismatch at '{prefix}': the checkpoint holds a {found}, this model's "
                             f"head is {mine}. Use the config the checkpoint was trained with (configs/bvr/).")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


@MODELS.register_module()
class BVR(SingleStageDetector):
    """The official detector type name: a single-stage detector whose head is a ``BVRHead``."""
