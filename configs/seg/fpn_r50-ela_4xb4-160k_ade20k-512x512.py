# Semantic FPN R-50 (mmseg's ResNetV1c), ADE20K 512x512, 160k iterations, with a attnzoo.layers.ELA plug-in after conv3
# of every bottleneck. Not a setup of any paper: the ELA paper reports no Semantic FPN / ADE20K number.
# Where the idea comes from: the ELA paper itself ("ELA: Efficient Local Attention for Deep Convolutional Neural
# Networks", Xu & Wan, arXiv:2403.01123, 2024) inserts ELA into the bottlenecks of ResNet-50 for ImageNet and uses
# ELA-equipped backbones for detection and segmentation; placing it after the last conv of the bottleneck, before the
# residual sum, is where SE / Coordinate Attention (the modules it revisits) sit. ELA is a gate (x scaled by two
# strip maps), so the plug-in adds no residual. Preset: ELA-B (kernel 7, depthwise, GroupNorm 16).
#   python tools/train.py configs/seg/fpn_r50-ela_4xb4-160k_ade20k-512x512.py
_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[dict(cfg=dict(type='ELA', preset='B'), stages=(True, True, True, True),
                                position='after_conv3')]))
