# PVT-S with PRepBN + Mask R-CNN, 1x, COCO (SLAB, ICML 2024; xinghaochen/SLAB).
# Paper: no COCO numbers come with the official code (its README: detection checkpoints "TBD"); cards list none.
# Setup of detection/configs/pvt/mask_rcnn_pvt_s_prepbn_fpn_1x_coco.py: the PVT-T setup
# (mask-rcnn_prepbn-pvt-t_fpn_1x_coco.py) with the small backbone and the official PVT-S optimizer (AdamW lr 2e-4,
# weight decay 1e-4).
_base_ = ['./mask-rcnn_prepbn-pvt-t_fpn_1x_coco.py']

model = dict(backbone=dict(model_name='prepbn_pvt_small', pretrained='prepbn_pvt_small'))
optim_wrapper = dict(optimizer=dict(lr=0.0002, weight_decay=0.0001))
