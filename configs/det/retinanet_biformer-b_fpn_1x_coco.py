# BiFormer-B + RetinaNet, 1x, COCO. Paper: box AP 47.1 (BiFormer, CVPR 2023; rayleizhu/BiFormer
# object_detection/README.md). Official config retinanet.1x.biformer_base.py: as BiFormer-S with drop path 0.3.
_base_ = ['./retinanet_biformer-s_fpn_1x_coco.py']
model = dict(
    backbone=dict(model_name='biformer_base', pretrained='biformer_base', drop_path_rate=0.3),
    neck=dict(in_channels=[96, 192, 384, 768]))
