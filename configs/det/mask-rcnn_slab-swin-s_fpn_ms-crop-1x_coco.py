# SLAB-Swin-S + Mask R-CNN, 1x with multi-scale crop training, COCO (SLAB, ICML 2024; xinghaochen/SLAB).
# Paper: no COCO numbers come with the official code (its README: detection checkpoints "TBD"); cards list none.
# Setup of detection/configs/swin/mask_rcnn_slab_swin_small_patch4_window7_mstrain_480-800_adamw_1x_coco.py: the
# SLAB-Swin-T setup (mask-rcnn_slab-swin-t_fpn_ms-crop-1x_coco.py) with the small backbone and drop path 0.2.
_base_ = ['./mask-rcnn_slab-swin-t_fpn_ms-crop-1x_coco.py']

model = dict(backbone=dict(model_name='slab_swin_small', pretrained='slab_swin_small', drop_path_rate=0.2))
