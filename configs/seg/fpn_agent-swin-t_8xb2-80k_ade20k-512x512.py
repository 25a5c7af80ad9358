# Agent-Swin-T + Semantic FPN, 80k iterations x 16 images, ADE20K 512x512. Not a setup of the Agent Attention paper
# or repository (no reported number): Agent-Swin's segmentation backbone (agent grids 9x9/12x12/14x14/7x7, LayerNorm
# on each output, drop path 0.3) with PVT's Semantic FPN recipe (AdamW lr 1e-4 wd 1e-4, poly decay 0.9).
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
        model_name='agent_swin_tiny',
        pretrained='agent_swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        model_kwargs=dict(
            downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)], always_partition=True, out_norms=True)),
    neck=dict(in_channels=[96, 192, 384, 768]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0001, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=80000, by_epoch=False)]
train_dataloader = dict(batch_size=2)
