# Swin-T with PRepBN + Mask R-CNN, 1x with multi-scale crop training, COCO (SLAB, ICML 2024; xinghaochen/SLAB).
# Paper: no COCO numbers come with the official code (its README: detection checkpoints "TBD"); cards list none.
# Setup of detection/configs/swin/mask_rcnn_swin_tiny_prepbn_patch4_window7_mstrain_480-800_adamw_1x_coco.py
# (backbone detection/mmdet_custom/swin_transformer_prepbn.py): Swin window attention (7) everywhere, windows kept at
# any size, a LayerNorm on each output, BatchNorms kept in eval mode while training (official _freeze_stages), drop
# path 0.1, Swin's multi-scale + crop training, AdamW lr 1e-4 wd 0.05 with no decay on norms and position tables,
# 12 epochs, steps at 8 and 11.
# One deliberate difference: the official detection backbone builds its norms as LinearNorm, which the released
# RepBN classification checkpoint (swin_tiny_prepbn.pth) does not fit (the official code loads it non-strictly);
# here the backbone keeps the released RepBN layout so the checkpoint loads strictly.
_base_ = ['./mask-rcnn_slab-swin-t_fpn_ms-crop-1x_coco.py']

model = dict(
    backbone=dict(
        model_name='prepbn_swin_tiny',
        pretrained='prepbn_swin_tiny',
        drop_path_rate=0.1,
        model_kwargs=dict(_delete_=True, always_partition=True, out_norms=True)))
