# BiFormer-S + Mask R-CNN, 1x, COCO. Paper: box AP 47.8, mask AP 43.2
# (BiFormer, CVPR 2023; rayleizhu/BiFormer object_detection/README.md: 48.1 / 43.6 reproduced at release).
# Setup of rayleizhu/BiFormer object_detection/configs/coco/maskrcnn.1x.biformer_small.py (UniFormer's recipe):
# n_win=16 with auto_pad, a LayerNorm2d on each output, drop path 0.2, AdamW lr 1e-4 wd 0.05 with no decay on norms
# and position tables, 8 GPUs x 2 images, 12 epochs, steps at 8 and 11; trained with AMP (add --amp).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_small',
        pretrained='biformer_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(n_win=16, auto_pad=True, extra_norms=True)),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
    }))
