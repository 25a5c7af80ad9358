# BiFormer-S + Semantic FPN, 80k iterations x 32 images, ADE20K 512x512. Paper: mIoU 48.9
# (BiFormer: Vision Transformer with Bi-Level Routing Attention, CVPR 2023; rayleizhu/BiFormer
# semantic_segmentation/README.md).
# Setup of rayleizhu/BiFormer semantic_segmentation/configs/ade20k/sfpn.biformer_small.py: n_win=8 (512 training
# resolution) with auto_pad, a LayerNorm2d on each output, drop path 0.15, AdamW lr 2e-4 wd 1e-4, linear warmup over
# 1000 iterations from 0.1x then cosine decay, 8 GPUs x 4 images; trained with AMP (add --amp).
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
        model_name='biformer_small',
        pretrained='biformer_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.15,
        model_kwargs=dict(n_win=8, auto_pad=True, extra_norms=True)),
    neck=dict(in_channels=[64, 128, 256, 512]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-8, by_epoch=False, begin=1000, end=80000),
]
train_dataloader = dict(batch_size=4)
