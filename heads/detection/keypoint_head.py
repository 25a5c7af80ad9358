"""RelationNet++'s keypoint head: per keypoint type a class heat map and a sub-stride offset, on every FPN level.

The keys of the BVR attention are read off these maps: local maxima (3x3), top-k per level, then top-k across levels;
their features are the detector's own tower features at those locations. Training targets come from
``PointKptAssigner``: for each ground-truth box and level, the grid point nearest to the box's keypoint is positive,
every point gets a Gaussian score (CornerNet's radius at IoU 0.7) of its distance to those positives, and positives
regress the offset to the exact keypoint in units of their stride. Loss: Gaussian focal loss on the sigmoid maps,
smooth L1 on positive offsets, both over the number of positives.

Written from microsoft/RelationNet2 (`code/models/dense_heads/keypoint_head.py`,
`code/core/bbox/assigners/point_kpt_assigner.py`, commit 0930752); module names follow the official ones so its
checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob, normal_init
from torch import nn

__all__ = ["KEYPOINT_TYPES", "KeypointHead", "PointKptAssigner", "check_keypoint_types", "gaussian_radius"]

KEYPOINT_TYPES = ("top_left_corner", "bottom_right_corner", "center")


def check_keypoint_types(types: Sequence[str], known: Sequence[str] = KEYPOINT_TYPES, where: str = "head_types",
                         owner: str = "the BVR keypoint head") -> list[str]:
    """``types`` as a list, or one ValueError naming the unknown types and the known ones."""
    types = [types] if isinstance(types, str) else list(types)
    unknown = [t for t in types if t not in known]
    if unknown or not types:
        raise ValueError(f"{where}: unknown keypoint type(s) {unknown or '(none given)'}; {owner} knows "
                         f"{list(known)}. Use those names in the config.")
    return types


def _box_to_points(point_type: str, boxes: torch.Tensor) -> torch.Tensor:
    if point_type == "top_left_corner":
        return boxes[:, :2]
    if point_type == "bottom_right_corner":
        return boxes[:, 2:]
    return boxes[:, :2] * 0.5 + boxes[:, 2:] * 0.5


def _gather(feat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """feat [N, P, C], index [N, M] -> [N, M, C]."""
    return feat.gather(1, index.unsqueeze(2).expand(*index.shape, feat.size(2)))


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float) -> torch.Tensor:
    """CornerNet's radius: the smallest of the three corner-shift cases that keep IoU >= ``min_overlap``."""
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 - torch.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 - torch.sqrt(b2 ** 2 - 16 * c2)) / 8
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + torch.sqrt(b3 ** 2 - 4 * a3 * c3)) / (2 * a3)
    return torch.stack([r1, r2, r3], dim=1).min(dim=1)[0]


@TASK_UTILS.register_module()
class PointKptAssigner:
    """Keypoint targets on all levels' points; see the module docstring. (Not an mmdet assigner: it returns dense
    targets, as the official one does.)"""

    def __init__(self, gaussian_iou: float = 0.7):
        self.gaussian_iou = gaussian_iou

    def assign(self, points: torch.Tensor, num_points_list: Sequence[int], gt_points: torch.Tensor,
               gt_bboxes: torch.Tensor, gt_labels: torch.Tensor | None = None, num_classes: int | None = None):
        """points [P, 3] (x, y, stride), all levels in order -> offset targets [P, 2], score targets [P, classes]
        (or [P] without ``num_classes``) and the positive mask [P]."""
        num_points = points.size(0)
        scores = points.new_zeros(num_points) if num_classes is None else points.new_zeros(num_points, num_classes)
        offsets = points.new_zeros(num_points, 2)
        pos_mask = points.new_zeros(num_points)
        if num_points == 0 or gt_bboxes.size(0) == 0:  # an image without objects: all negative (official: crashes)
            return offsets, scores, pos_mask
        xy = points[:, :2]
        radius = gaussian_radius(gt_bboxes[:, 3] - gt_bboxes[:, 1], gt_bboxes[:, 2] - gt_bboxes[:, 0],
                                 self.gaussian_iou)
        sigma_square = ((2 * radius + 1) / 6)[None, :] ** 2
        distance = (xy[:, None, :] - gt_points[None]).pow(2).sum(dim=2)
        bounds = np.cumsum([0, *num_points_list])
        per_gt = points.new_zeros(num_points, gt_bboxes.size(0))
        for start, end in zip(bounds[:-1], bounds[1:]):
            nearest = start + distance[start:end].min(dim=0)[1]  # per gt: its level's nearest point
            selected = points[nearest]
            shift = xy[start:end, None, :] - selected[None, :, :2]
            per_gt[start:end] = torch.exp(-0.5 * shift.pow(2).sum(dim=-1) / sigma_square)
            pos_mask[nearest] = 1
        best, best_gt = per_gt.max(dim=1)
        positive = pos_mask == 1
        offsets[positive] = (gt_points[best_gt][positive] - points[positive, :2]) / points[positive, 2:]
        if num_classes is None:
            scores = best
        else:
            scores[torch.arange(num_points, device=points.device), gt_labels.index_select(0, best_gt)] = best
        return offsets, scores, pos_mask


@MODELS.register_module()
class KeypointHead(BaseModule):
    """Keypoint heat maps (``num_classes`` channels) and offsets (2 channels) per type in ``head_types``.

    Layers per type: ``stacked_convs`` 3x3 ConvModules (after ``shared_stacked_convs`` shared ones), then for the
    class map and the offset map each ``logits_convs`` ConvModules and a 3x3 conv. ``loss_cls`` defaults to what the
    released configs use (GaussianFocalLoss, weight 0.25); ``loss_offset`` to the official SmoothL1Loss, weight 1/9.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 256, stacked_convs: int = 4,
                 strides: Sequence[int] = (4, 8, 16, 32, 64), shared_stacked_convs: int = 0, logits_convs: int = 0,
                 head_types: Sequence[str] | None = None, corner_pooling: bool = False, conv_cfg: dict | None = None,
                 norm_cfg: dict | None = None, loss_cls: dict | None = None, loss_offset: dict | None = None,
                 train_cfg: dict | None = None, test_cfg: dict | None = None, init_cfg: dict | None = None):
        super().__init__(init_cfg=init_cfg)
        if corner_pooling:
            raise ValueError("corner_pooling=True needs the official corner-pool CUDA op; no released BVR model uses "
                             "it. Set corner_pooling=False.")
        self.head_types = check_keypoint_types(KEYPOINT_TYPES if head_types is None else head_types)
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.feat_channels = feat_channels
        self.stacked_convs = stacked_convs
        self.strides = list(strides)
        self.shared_stacked_convs = shared_stacked_convs
        self.logits_convs = logits_convs
        self.conv_cfg = conv_cfg
        self.norm_cfg = norm_cfg
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.loss_cls = MODELS.build(loss_cls or dict(type="GaussianFocalLoss", loss_weight=0.25))
        self.loss_offset = MODELS.build(loss_offset or dict(type="SmoothL1Loss", loss_weight=1.0 / 9.0))
        assigner = (train_cfg or {}).get("assigner", dict(type="PointKptAssigner"))
        self.point_assigner = TASK_UTILS.build(assigner)

        self.shared_layers = self._conv_stack(in_channels, shared_stacked_convs)
        tower_in = in_channels if shared_stacked_convs == 0 else feat_channels
        self.keypoint_layers = nn.ModuleDict()
        self.keypoint_cls_heads = nn.ModuleDict()
        self.keypoint_offset_heads = nn.ModuleDict()
        for head_type in self.head_types:
            self.keypoint_layers[head_type] = self._conv_stack(tower_in, stacked_convs)
            cls_head = self._conv_stack(feat_channels, logits_convs)
            cls_head.append(nn.Conv2d(feat_channels, num_classes, 3, stride=1, padding=1))
            self.keypoint_cls_heads[head_type] = cls_head
            offset_head = self._conv_stack(feat_channels, logits_convs)
            offset_head.append(nn.Conv2d(feat_channels, 2, 3, stride=1, padding=1))
            self.keypoint_offset_heads[head_type] = offset_head

    def _conv_stack(self, in_channels: int, num_convs: int) -> nn.ModuleList:
        return nn.ModuleList(
            ConvModule(in_channels if i == 0 else self.feat_channels, self.feat_channels, 3, stride=1, padding=1,
                       conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg) for i in range(num_convs))

    def init_weights(self) -> None:
        """The official initialisation: every conv N(0, 0.01), the heat-map bias for a 0.01 prior."""
        super().init_weights()
        for module in self.modules():
            if isinstance(module, ConvModule):
                normal_init(module.conv, std=0.01)
        bias_cls = bias_init_with_prob(0.01)
        for head in self.keypoint_cls_heads.values():
            normal_init(head[-1], std=0.01, bias=bias_cls)
        for head in self.keypoint_offset_heads.values():
            normal_init(head[-1], std=0.01)

    # ------------------------------------------------------------------------------------------------------ forward

    def forward(self, feats: Sequence[torch.Tensor], choices: Sequence[str] | str | None = None):
        """FPN features -> ({type: [heat-map logits per level]}, {type: [offsets per level]})."""
        choices = self.head_types if choices is None else check_keypoint_types(choices, self.head_types, "choices",
                                                                                "this keypoint head")
        scores: dict[str, list[torch.Tensor]] = {c: [] for c in choices}
        offsets: dict[str, list[torch.Tensor]] = {c: [] for c in choices}
        for x in feats:
            feat = x
            for layer in self.shared_layers:
                feat = layer(feat)
            for head_type in choices:
                keypoint_feat = feat
                for layer in self.keypoint_layers[head_type]:
                    keypoint_feat = layer(keypoint_feat)
                cls_feat = offset_feat = keypoint_feat
                for layer in self.keypoint_cls_heads[head_type]:
                    cls_feat = layer(cls_feat)
                for layer in self.keypoint_offset_heads[head_type]:
                    offset_feat = layer(offset_feat)
                scores[head_type].append(cls_feat)
                offsets[head_type].append(offset_feat)
        return scores, offsets

    def get_points(self, featmap_sizes, dtype, device) -> list[torch.Tensor]:
        """Per level [H*W, 3]: (x, y) of each cell's centre in image pixels (row-major) and the stride."""
        points = []
        for (h, w), stride in zip(featmap_sizes, self.strides):
            y, x = torch.meshgrid(torch.arange(h, dtype=dtype, device=device),
                                  torch.arange(w, dtype=dtype, device=device), indexing="ij")
            x, y = x.flatten() * stride + stride // 2, y.flatten() * stride + stride // 2
            points.append(torch.stack([x, y, x.new_full(x.shape, stride)], dim=1))
        return points

    # ---------------------------------------------------------------------------------------------------- keypoints

    def _keypoints_single(self, logits, offsets, locations, stride, max_keypoint_num, block_grad):
        heat = logits.sigmoid()
        heat = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).float()  # local maxima only
        batch, classes, height, width = heat.shape
        k = min(height * width, max_keypoint_num)
        per_class, per_class_inds = torch.topk(heat.view(batch, classes, -1), k)
        score, flat = torch.topk(per_class.view(batch, -1), k)
        inds = _gather((per_class_inds % (height * width)).view(batch, -1, 1), flat).view(batch, k)
        where = _gather(locations[None].expand(batch, height * width, 3), inds)
        picked = _gather(offsets.reshape(batch, 2, -1).permute(0, 2, 1), inds)
        if block_grad:
            picked, score = picked.detach(), score.detach()
        return score, torch.stack([where[..., 0], where[..., 1]], dim=-1) + picked * stride, inds

    def get_keypoints(self, keypoint_logits: Sequence[torch.Tensor], keypoint_offsets: Sequence[torch.Tensor],
                      max_keypoint_num: int = 20, keypoint_score_thr: float = 0.0, block_grad: bool = False):
        """Per level: the top ``max_keypoint_num`` local maxima (scores [B, k], positions [B, k, 2] in pixels,
        flat indices [B, k]) and the level's points. ``keypoint_score_thr`` is accepted and, as in the official
        code, not applied."""
        points = self.get_points([x.shape[-2:] for x in keypoint_logits], keypoint_logits[0].dtype,
                                 keypoint_logits[0].device)
        scores, positions, inds = [], [], []
        for logits, offsets, locations, stride in zip(keypoint_logits, keypoint_offsets, points, self.strides):
            s, p, i = self._keypoints_single(logits, offsets, locations, stride, max_keypoint_num, block_grad)
            scores.append(s)
            positions.append(p)
            inds.append(i)
        return scores, positions, inds, points

    def get_keypoints_multihead(self, keypoint_logits: dict, keypoint_offsets: dict, keypoint_choices: Sequence[str],
                                **kwargs):
        """``get_keypoints`` on the chosen types stacked along the batch (type-major: [type0 images, type1 ...])."""
        logits = [torch.cat(level, dim=0) for level in zip(*(keypoint_logits[c] for c in keypoint_choices))]
        offsets = [torch.cat(level, dim=0) for level in zip(*(keypoint_offsets[c] for c in keypoint_choices))]
        return self.get_keypoints(logits, offsets, **kwargs)

    def get_keypoint_features(self, feature_sets, keypoint_scores, keypoint_positions, keypoint_inds,
                              num_keypoint_head: int = 1, selection_method: str = "index", cross_level_topk: int = -1,
                              cross_level_selection: bool = False):
        """Features [B, K, C] and positions [B, K, 2] of the keys, per level and per type (tuples of length
        ``num_keypoint_head``). With ``cross_level_topk`` > 0 the best keys over all levels serve every level
        (taking at most as many as there are: the official code fails on images too small to have that many);
        with ``cross_level_selection`` their features come from their own level (``index``), else every level
        samples its own map at their positions (``interpolation``)."""
        if selection_method not in ("index", "interpolation"):
            raise ValueError(f"selection_method {selection_method!r}: use 'index' or 'interpolation'")
        image_size = [side * self.strides[0] for side in feature_sets[0].shape[-2:][::-1]]  # (w, h)

        def select(maps, positions, inds=None):
            repeat = positions.size(0) // maps.size(0)
            if selection_method == "index":
                if inds is None:
                    raise ValueError("selection_method='index' needs each key's own level: set "
                                     "cross_level_selection=True (as the released configs do) or use 'interpolation'")
                flat = maps.reshape(*maps.shape[:2], -1).permute(0, 2, 1)
                flat = flat[None].expand(repeat, -1, -1, -1).reshape(-1, *flat.shape[1:])
                return _gather(flat, inds)
            grid = positions * 2.0 / positions.new_tensor(image_size).reshape(1, 1, 2) - 1.0
            maps = maps[None].expand(repeat, -1, -1, -1, -1).reshape(-1, *maps.shape[1:])
            return F.grid_sample(maps, grid.unsqueeze(1), align_corners=False,
                                 padding_mode="border").squeeze(2).permute(0, 2, 1)

        levels = range(len(feature_sets))
        if cross_level_topk > 0:
            all_scores = torch.cat(list(keypoint_scores), dim=-1)
            _, top = torch.topk(all_scores, k=min(cross_level_topk, all_scores.size(-1)), dim=-1)
            top_positions = _gather(torch.cat(list(keypoint_positions), dim=1), top)
            if cross_level_selection:
                own = torch.cat([select(feature_sets[i], keypoint_positions[i], keypoint_inds[i]) for i in levels],
                                dim=1)
                features = [_gather(own, top)] * len(feature_sets)
            else:
                features = [select(feature_sets[i], top_positions) for i in levels]
            positions = [top_positions] * len(feature_sets)
        else:
            features = [select(feature_sets[i], keypoint_positions[i], keypoint_inds[i]) for i in levels]
            positions = list(keypoint_positions)
        return ([f.chunk(num_keypoint_head, dim=0) for f in features],
                [p.chunk(num_keypoint_head, dim=0) for p in positions])

    # --------------------------------------------------------------------------------------------------------- loss

    def loss_multihead(self, keypoint_scores: dict, keypoint_offsets: dict, gt_bboxes: Sequence[torch.Tensor],
                       gt_labels: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Gaussian focal loss on the heat maps and smooth L1 on positive offsets, every type at once."""
        names = list(keypoint_scores)
        scores = [torch.cat(level, dim=0) for level in zip(*(keypoint_scores[n] for n in names))]
        offsets = [torch.cat(level, dim=0) for level in zip(*(keypoint_offsets[n] for n in names))]
        gt_points = [_box_to_points(n, boxes) for n in names for boxes in gt_bboxes]
        points = self.get_points([s.shape[-2:] for s in scores], scores[0].dtype, scores[0].device)
        num_points = [p.size(0) for p in points]
        points = torch.cat(points)

        def flat(maps):
            return torch.cat([m.reshape(*m.shape[:2], -1) for m in maps], dim=-1).permute(0, 2, 1)

        scores, offsets = flat(scores), flat(offsets)
        targets = [self.point_assigner.assign(points, num_points, p, b, lbl, self.num_classes)
                   for p, b, lbl in zip(gt_points, list(gt_bboxes) * len(names), list(gt_labels) * len(names))]
        offset_targets = torch.stack([t[0] for t in targets])
        score_targets = torch.stack([t[1] for t in targets])
        pos_masks = torch.stack([t[2] for t in targets])[..., None]
        avg_factor = reduce_mean(pos_masks.sum())
        loss_cls = self.loss_cls(scores.sigmoid(), score_targets, avg_factor=avg_factor)
        loss_offset = self.loss_offset(offsets, offset_targets, weight=pos_masks.expand_as(offsets),
                                       avg_factor=avg_factor)
        return {"loss_point_cls": loss_cls, "loss_point_offset": loss_offset}
