# FocalNet-T (SRF) + Mask R-CNN, 1x with multi-scale crop training, COCO. Paper: box AP 45.9, mask AP 41.3
# (Focal Modulation Networks, NeurIPS 2022; microsoft/FocalNet README.md).
# Setup of microsoft/FocalNet detection/configs/focalnet/mask_rcnn_focalnet_tiny_patch4_mstrain_480-800_adamw_1x_coco_srf.py:
# focal kernels 9/11 (focal_windows=9; the 3/5 ImageNet kernels are zero-padded on load), a LayerNorm on each output,
# drop path 0.1, Swin's multi-scale + crop training, AdamW lr 1e-4 wd 0.05 with no decay on norms, 12 epochs with
# steps at 9 and 11, trained with AMP (add --amp). The official config sets 1 image per GPU (GPU count not stated).
_base_ = ['mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='focalnet_tiny_srf',
        pretrained='focalnet_tiny_srf',
        out_indices=(0, 1, 2, 3),
        out_norm='LN2d',
        drop_path_rate=0.1,
        model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
    neck=dict(in_channels=[96, 192, 384, 768]))

train_dataloader = dict(batch_size=1)
max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
# optim_wrapper (AdamW lr 1e-4, wd 0.05, no decay on 'norm' / position tables) comes from the Swin base.
