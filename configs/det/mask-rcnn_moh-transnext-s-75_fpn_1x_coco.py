# MoH-ViT-S-75 (MoH-TransNeXt-Small, 75% heads) + Mask R-CNN, 1x, COCO. Not a setup of the MoH paper (it reports
# ImageNet classification only for MoH-ViT; SkyworkAI/MoH ships no detection code): the TransNeXt Mask R-CNN 1x
# recipe (detection/maskrcnn/configs/mask_rcnn_transnext_small_fpn_1x_coco.py: drop path 0.6 for Small, AdamW lr 1e-4
# wd 0.05 without decay on the TransNeXt position/temperature parameters and the norms) with the MoH backbone.
# The MoH load-balancing loss is not added by mmdet's runner (only `zoo train` adds it); the backbone trains without it.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['zoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='moh_transnext_small_75',
        pretrained='moh_transnext_small_75',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.6),
    neck=dict(in_channels=[72, 144, 288, 576]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'query_embedding': dict(decay_mult=0.), 'relative_pos_bias_local': dict(decay_mult=0.),
        'cpb': dict(decay_mult=0.), 'temperature': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))
train_dataloader = dict(batch_size=2)
