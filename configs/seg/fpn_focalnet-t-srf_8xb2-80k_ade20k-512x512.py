# FocalNet-T (SRF) + Semantic FPN, 80k iterations x 16 images, ADE20K 512x512. Not a setup of the FocalNet paper or
# repository (no reported number): FocalNet's segmentation backbone (focal kernels 9/11, LayerNorm on each output,
# drop path 0.3 as its UperNet setup) with PVT's Semantic FPN recipe (AdamW lr 1e-4 wd 1e-4, poly decay 0.9,
# 8 GPUs x 2 images, 80k iterations).
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='focalnet_tiny_srf',
        pretrained='focalnet_tiny_srf',
        out_indices=(0, 1, 2, 3),
        out_norm='LN2d',
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)]
train_dataloader = dict(batch_size=2)
