# PVT-T with PRepBN + Mask R-CNN, 1x, COCO (SLAB, ICML 2024; xinghaochen/SLAB).
# Paper: no COCO numbers come with the official code (its README: detection checkpoints "TBD"); cards list none.
# Setup of detection/configs/pvt/mask_rcnn_pvt_t_prepbn_fpn_1x_coco.py: Mask R-CNN R-50 FPN 1x with the PVT backbone,
# AdamW lr 1e-4 wd 0.05, no gradient clipping, 12 epochs, steps at 8 and 11. BatchNorms (inside the PRepBN norms)
# kept in eval mode while training, as the official SLAB detection backbones do.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='prepbn_pvt_tiny',
        pretrained='prepbn_pvt_tiny',
        out_indices=(0, 1, 2, 3),
        norm_eval=True),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.05))
