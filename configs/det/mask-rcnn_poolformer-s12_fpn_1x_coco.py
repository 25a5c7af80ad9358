# PoolFormer-S12 + Mask R-CNN, 1x, COCO. Paper: box AP 37.3, mask AP 34.6
# (MetaFormer Is Actually What You Need for Vision, CVPR 2022; sail-sg/poolformer detection/README.md).
# Setup of sail-sg/poolformer detection/configs/mask_rcnn_poolformer_s12_fpn_1x_coco.py: GroupNorm(1) on each output,
# AdamW lr 2e-4 wd 1e-4 (no parameter-wise rules there), 8 GPUs x 2 images, 12 epochs, steps at 8 and 11.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='poolformer_s12',
        pretrained='poolformer_s12',
        out_indices=(0, 1, 2, 3),
        out_norm='GN1'),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0002, weight_decay=0.0001))
