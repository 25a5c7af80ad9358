# PoolFormer-S12 + RetinaNet, 1x schedule, COCO.
# Paper: box AP 36.2 (MetaFormer Is Actually What You Need for Vision, Table 3; sail-sg/poolformer detection/README.md).
# Setup as sail-sg/poolformer detection/configs/retinanet_poolformer_s12_fpn_1x_coco.py: per-level GroupNorm outputs,
# AdamW lr 1e-4 wd 1e-4 (no parameter-wise rules in the official config), 8 GPUs x 2 images, 12 epochs.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['zoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='poolformer_s12',
        pretrained='poolformer_s12',
        out_indices=(0, 1, 2, 3),
        out_norm='GN1'),
    neck=dict(in_channels=[64, 128, 320, 512], start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
