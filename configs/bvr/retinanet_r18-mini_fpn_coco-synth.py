# The CPU baseline of the BVR ablation (tools/bvr_ablation.py): plain RetinaNet on a ResNet-18 at 1/4 width (16-128
# channels, random init), narrow FPN / head (32 channels), on the project's synthetic COCO-format set at 128x96.
# Not a setup of any paper. retinanet-bvr_r18-mini_fpn_coco-synth.py is the same with the BVR head.
#   python tools/make_coco_det.py data/coco_synth --num-train 64 --num-val 16 --height 96 --width 128
#   python tools/train.py configs/bvr/retinanet_r18-mini_fpn_coco-synth.py
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco-synth_detection.py',
    'mmdet::_base_/default_runtime.py'
]
# mmengine reads checkpoints through the zoo's reader (mmdet's own tools/test.py reads what its train.py wrote)
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)
channels = 32
model = dict(
    backbone=dict(depth=18, base_channels=16, out_indices=(1, 2, 3), frozen_stages=-1, norm_eval=False,
                  init_cfg=None),
    neck=dict(in_channels=[32, 64, 128], out_channels=channels, start_level=0, add_extra_convs='on_input',
              num_outs=5),
    bbox_head=dict(in_channels=channels, feat_channels=channels, stacked_convs=2),
    test_cfg=dict(score_thr=0.05, max_per_img=20))

image_scale = (128, 96)
train_dataloader = dict(
    batch_size=8,
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
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.002, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_epochs), logger=dict(interval=4))
randomness = dict(seed=0)
