# The synthetic-data variant of faster-rcnn_r50-bra-c3-c5_fpn_1x_coco.py: the same detector and BRA plug-ins (ResNet-50
# layout at a quarter of the width, base_channels=16), narrow FPN and heads, trained from scratch on the project's small
# COCO-format set (tools/make_coco_det.py). Not a setup of any paper: it exists so that training through the plug-in
# runs on a CPU (tests/mm/test_plugin_layers.py checks that a few iterations lower the loss).
#   python tools/make_coco_det.py data/coco_synth --num-train 128 --num-val 32 --height 96 --width 128
#   python tools/train.py configs/det/faster-rcnn_r50-bra-c3-c5_fpn_coco-synth.py
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py', '../_base_/datasets/coco-synth_detection.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        stem_channels=16,
        base_channels=16,
        norm_cfg=dict(type='GN', num_groups=8, requires_grad=True),  # batch 2-8 from scratch: no BatchNorm statistics
        norm_eval=False,
        init_cfg=None,  # from scratch: no torchvision download
        plugins=[
            dict(cfg=dict(type='BiLevelRoutingAttention2d'), stages=(False, True, True, True), position='after_conv2')
        ]),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64)),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))

image_scale = (128, 96)
train_dataloader = dict(
    batch_size=4,
    dataset=dict(pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=image_scale, keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackDetInputs'),
    ]))
val_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]))
test_dataloader = val_dataloader

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_epochs), logger=dict(interval=8))
