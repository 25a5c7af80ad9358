# PoolFormer-S12 + Semantic FPN, 40k iterations x 32 images, ADE20K 512x512. Paper: mIoU 37.2
# (MetaFormer Is Actually What You Need for Vision, CVPR 2022; sail-sg/poolformer segmentation/README.md).
# Setup of sail-sg/poolformer segmentation/configs/sem_fpn/PoolFormer/fpn_poolformer_s12_ade20k_40k.py (PVT's recipe
# with 2x the batch for half the iterations): GroupNorm(1) on each output, AdamW lr 2e-4 wd 1e-4, poly decay 0.9,
# 8 GPUs x 4 images.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py'
]
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='poolformer_s12',
        pretrained='poolformer_s12',
        out_indices=(0, 1, 2, 3),
        out_norm='GN1'),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_dataloader = dict(batch_size=4)
