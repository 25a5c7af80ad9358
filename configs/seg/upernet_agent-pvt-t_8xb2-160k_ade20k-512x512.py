# Agent-PVT-T + UperNet, 160k iterations x 16 images, ADE20K 512x512. Not a setup of the Agent Attention paper or
# repository (no reported number): Agent-PVT's segmentation backbone (agent grids 12x12/16x16/28x28/28x28, drop path
# 0.1) with Swin's UperNet recipe (AdamW lr 6e-5 wd 0.01, no decay on norms and agent biases, warmup 1500 then poly).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='agent_pvt_tiny',
        pretrained='agent_pvt_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)])),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))

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
