# Agent-Swin-T + RetinaNet, 1x, COCO. Not a setup of the Agent Attention paper or repository (no reported number):
# Agent-Swin's detection backbone (agent grids 9x9/12x12/14x14/7x7, LayerNorm on each output, drop path 0.1) with the
# optimizer of its Mask R-CNN recipe (AdamW lr 1e-4 wd 0.05, no decay on norms and agent biases), single-scale 1x.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='agent_swin_tiny',
        pretrained='agent_swin_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(
            downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)], always_partition=True, out_norms=True)),
    neck=dict(in_channels=[192, 384, 768], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'absolute_pos_embed': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'norm': dict(decay_mult=0.),
        'an_bias': dict(decay_mult=0.),
        'na_bias': dict(decay_mult=0.),
        'ah_bias': dict(decay_mult=0.),
        'aw_bias': dict(decay_mult=0.),
        'ha_bias': dict(decay_mult=0.),
        'wa_bias': dict(decay_mult=0.),
    }))
# Agent-Swin's output norms are per stage (norm0..norm3): norm0 is unused when stage 0 is not returned.
find_unused_parameters = True
