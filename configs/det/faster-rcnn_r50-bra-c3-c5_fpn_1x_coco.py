# Faster R-CNN R-50-FPN 1x COCO with a attnzoo.layers.BiLevelRoutingAttention2d plug-in after conv2 of every bottleneck in
# ResNet stages 2-4 (C3-C5). Not a setup of any paper: no published number exists for this pairing.
# Where the idea comes from: mmdet's own recipes for attention plug-ins in a ResNet, configs/empirical_attention
# (GeneralizedAttention, "An Empirical Study of Spatial Attention Mechanisms in Deep Networks", Zhu et al., ICCV 2019:
# position 'after_conv2') and configs/gcnet (ContextBlock, Cao et al., 2019), with BiFormer's bi-level routing
# attention (Zhu et al., CVPR 2023) as the plug-in, the way its users drop BRA blocks into other detectors.
# The plug-in is x + gamma * BRA(x) with gamma starting at 0 (attnzoo.openmmlab), so the ImageNet ResNet-50 is unchanged
# at step 0; BRA uses its defaults (heads of 32 channels, 8x8-token regions, top-4 routing), any input size works.
#   python tools/train.py configs/det/faster-rcnn_r50-bra-c3-c5_fpn_1x_coco.py
_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(cfg=dict(type='BiLevelRoutingAttention2d'), stages=(False, True, True, True), position='after_conv2')
    ]))
