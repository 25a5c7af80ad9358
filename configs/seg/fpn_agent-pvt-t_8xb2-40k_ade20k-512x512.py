# Agent-PVT-T + Semantic FPN, 40k iterations, ADE20K 512x512. Paper: mIoU 40.18
# (Agent Attention, ECCV 2024; LeapLabTHU/Agent-Attention downstream/segmentation/README.md).
# Setup of downstream/segmentation/configs/agent_pvt/fpn_agent_pvt_t_12-16-28-28.py: downstream agent grids
# 12x12/16x16/28x28/28x28 (agent biases interpolated), drop path 0.1, AdamW lr 2e-4 wd 1e-4, poly decay 0.9,
# 2 images per GPU (the config does not state the GPU count; 8 assumed as for the repository's other setups).
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
        model_name='agent_pvt_tiny',
        pretrained='agent_pvt_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)])),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
param_scheduler = [dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)]
train_dataloader = dict(batch_size=2)
