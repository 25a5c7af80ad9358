# Agent-Swin-T + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 46.68
# (Agent Attention, ECCV 2024; LeapLabTHU/Agent-Attention downstream/segmentation/README.md).
# Setup of downstream/segmentation/configs/agent_swin/upernet_agent_swin_t_9-12-14-7.py (Swin's UperNet recipe):
# downstream agent grids 9x9/12x12/14x14/7x7, window partition kept at any size, a LayerNorm on each output,
# drop path 0.3, AdamW lr 6e-5 wd 0.01 with no decay on norms, position tables and the agent biases, linear warmup
# 1500 iterations then poly decay 1.0, 8 GPUs x 2 images.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='agent_swin_tiny',
        pretrained='agent_swin_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        model_kwargs=dict(
            downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)], always_partition=True, out_norms=True)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))

optim_wrapper = dict(
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
