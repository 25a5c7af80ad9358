# Agent-Swin-T + Mask R-CNN, 1x with multi-scale crop training, COCO. Paper: box AP 44.6, mask AP 40.7
# (Agent Attention, ECCV 2024; LeapLabTHU/Agent-Attention downstream/detection/README.md).
# Setup of downstream/detection/configs/agent_swin/agent_swin_t_mrcnn_1x_9-12-14-7.py: downstream agent grids
# 9x9/12x12/14x14/7x7, window partition kept at any size, a LayerNorm on each output, drop path 0.1, Swin's
# multi-scale + crop training, AdamW lr 1e-4 wd 0.05 with no decay on norms, position tables and the agent biases,
# 8 GPUs x 2 images, 12 epochs, steps at 8 and 11.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='agent_swin_tiny',
        pretrained='agent_swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(
            downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)], always_partition=True, out_norms=True)),
    neck=dict(in_channels=[96, 192, 384, 768]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'an_bias': dict(decay_mult=0.),
        'na_bias': dict(decay_mult=0.),
        'ah_bias': dict(decay_mult=0.),
        'aw_bias': dict(decay_mult=0.),
        'ha_bias': dict(decay_mult=0.),
        'wa_bias': dict(decay_mult=0.),
    }))
