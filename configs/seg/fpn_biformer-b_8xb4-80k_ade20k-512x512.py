# BiFormer-B + Semantic FPN, 80k iterations x 32 images, ADE20K 512x512. Paper: mIoU 49.9 (BiFormer, CVPR 2023;
# rayleizhu/BiFormer semantic_segmentation/README.md). Official config sfpn.biformer_base.py: drop path 0.3.
_base_ = ['./fpn_biformer-s_8xb4-80k_ade20k-512x512.py']
model = dict(
    backbone=dict(model_name='biformer_base', pretrained='biformer_base', drop_path_rate=0.3),
    neck=dict(in_channels=[96, 192, 384, 768]))
