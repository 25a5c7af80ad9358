# FocalNet-T (SRF) + RetinaNet, 1x, COCO. Not a setup of the FocalNet paper or repository (no reported number):
# FocalNet's detection backbone (focal kernels 9/11, LayerNorm on each output, drop path 0.1) with the optimizer of
# its Mask R-CNN recipe (AdamW lr 1e-4, wd 0.05, no decay on norms), single-scale 1x as the other RetinaNet configs.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='focalnet_tiny_srf',
        pretrained='focalnet_tiny_srf',
        out_indices=(1, 2, 3),
        out_norm='LN2d',
        drop_path_rate=0.1,
        model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
