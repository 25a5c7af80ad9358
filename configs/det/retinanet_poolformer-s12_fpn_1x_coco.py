# PoolFormer-S12 + RetinaNet, 1x, COCO. Paper: box AP 36.2
# (MetaFormer Is Actually What You Need for Vision, CVPR 2022; sail-sg/poolformer detection/README.md).
# Setup of sail-sg/poolformer detection/configs/retinanet_poolformer_s12_fpn_1x_coco.py: GroupNorm(1) on each output,
# AdamW lr 1e-4 wd 1e-4 (no parameter-wise rules there), 8 GPUs x 2 images, 12 epochs, steps at 8 and 11.
# Stage 0 only feeds stage 1 here (RetinaNet's FPN starts at stride 8), so it is not returned: same network, and DDP
# needs no find_unused_parameters.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='poolformer_s12',
        pretrained='poolformer_s12',  # model card: ImageNet-1k weights, sha256-checked
        out_indices=(1, 2, 3),
        out_norm='GN1'),
    neck=dict(in_channels=[128, 320, 512], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
