# RelationNet++ (NeurIPS 2020): RetinaNet + BVR, ResNeXt-101 64x4d with DCNv2 in stages 2-4, FPN, multi-scale training
# (short side 400-1200), 20 epochs (lr steps 16, 19), single-scale test. Official: microsoft/RelationNet2
# configs/bvr/retinanet_x101_dcn_fpn_relation_coco_2x.py (mmdet 2.x), commit 0930752.
# Official README (COCO val2017): bbox mAP 46.5 / AP50 66.3 / AP75 50.6 (not reproduced here: no COCO on this machine).
# Official checkpoint: https://drive.google.com/file/d/1YyAG9OAjkeWStGkM5kLy6l95tXEa_E_b/view (keys load as they are).
_base_ = ['./retinanet-bvr_r50_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        type='ResNeXt', depth=101, groups=64, base_width=4,
        dcn=dict(type='DCNv2', deform_groups=1, fallback_on_stride=False), stage_with_dcn=(False, True, True, True),
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')),
    neck=dict(norm_cfg=None),  # GN only in the r50 config
    bbox_head=dict(
        bbox_head_cfg=dict(norm_cfg=None),
        keypoint_head_cfg=dict(norm_cfg=None),
        pos_cfg=dict(base_size=[300, 300], log_scale=True)),
    test_cfg=dict(nms=dict(type='nms', iou_threshold=0.6)))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 400), (1333, 1200)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 20
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[16, 19], gamma=0.1),
]
