# A miniature BiFormer (one block per stage, 32-128 channels, 0.5M parameters) + RetinaNet on the project's small
# synthetic COCO-format set (tools/make_coco_det.py). Not a setup of the BiFormer paper: it trains from scratch on
# a CPU in minutes, and tests/mm/test_learning.py uses it to show that detection training through ZooBackbone learns.
#   python tools/make_coco_det.py data/coco_synth --num-train 128 --num-val 32 --height 96 --width 128
#   python tools/train.py configs/det/retinanet_biformer-mini_fpn_coco-synth.py
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py', '../_base_/datasets/coco-synth_detection.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_small',
        pretrained=None,
        out_indices=(1, 2, 3),
        model_kwargs=dict(
            depth=(1, 1, 1, 1), embed_dim=(32, 64, 96, 128), qk_dims=(32, 64, 96, 128), n_win=4, auto_pad=True,
            extra_norms=True)),
    neck=dict(in_channels=[64, 96, 128], out_channels=64, start_level=0, add_extra_convs='on_input', num_outs=5),
    bbox_head=dict(in_channels=64, feat_channels=64, stacked_convs=2),
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
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}),
    clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=0, end=max_epochs, eta_min_ratio=0.01),
]
default_hooks = dict(checkpoint=dict(interval=max_epochs), logger=dict(interval=8))
