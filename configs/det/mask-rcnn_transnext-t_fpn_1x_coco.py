# TransNeXt-Tiny + Mask R-CNN, 1x, COCO. Paper: box AP 49.9, mask AP 44.6
# (TransNeXt, CVPR 2024; DaiShiResearch/TransNeXt detection/maskrcnn/README.md).
# Setup of detection/maskrcnn/configs/mask_rcnn_transnext_tiny_fpn_1x_coco.py: Mask R-CNN R-50 FPN 1x with the
# TransNeXt-Tiny backbone (drop path 0.4, relative positions scaled by the 224 pre-training size: the zoo model's
# default, its tables follow the input), AdamW lr 1e-4 wd 0.05 without decay on query_embedding,
# relative_pos_bias_local, cpb, temperature and the norms, no gradient clipping, 2 images per GPU.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='transnext_tiny',
        pretrained='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4),
    neck=dict(in_channels=[72, 144, 288, 576]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'query_embedding': dict(decay_mult=0.), 'relative_pos_bias_local': dict(decay_mult=0.),
        'cpb': dict(decay_mult=0.), 'temperature': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))
train_dataloader = dict(batch_size=2)
