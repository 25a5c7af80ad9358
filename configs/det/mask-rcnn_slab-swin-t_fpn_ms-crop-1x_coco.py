# SLAB-Swin-T + Mask R-CNN, 1x with multi-scale crop training, COCO (SLAB, ICML 2024; xinghaochen/SLAB).
# Paper: no COCO numbers come with the official code (its README: detection checkpoints "TBD"); cards list none.
# Setup of detection/configs/swin/mask_rcnn_slab_swin_tiny_patch4_window7_mstrain_480-800_adamw_1x_coco.py
# (backbone detection/mmdet_custom/swin_transformer_slab.py): linear attention in stages 1-2 ('LLSS') on windows
# 56 / 28 and softmax windows of 7 in stages 3-4, every window kept (and shifted) at any size, maps padded to the
# window; a LayerNorm on each output; BatchNorms (inside the PRepBN norms) kept in eval mode while training, as the
# official _freeze_stages does; drop path 0.1; Swin's multi-scale + crop training; AdamW lr 1e-4 wd 0.05 with no decay
# on norms and position tables; 8 GPUs x 2 images, 12 epochs, steps at 8 and 11.
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='slab_swin_tiny',
        pretrained='slab_swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        norm_eval=True,
        model_kwargs=dict(stage_window_sizes=(56, 28, 7, 7), always_partition=True, out_norms=True)),
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
    }))
