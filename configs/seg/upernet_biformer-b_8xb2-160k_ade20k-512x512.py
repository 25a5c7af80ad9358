# BiFormer-B + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 51.0 (51.7 multi-scale + flip)
# (BiFormer, CVPR 2023; rayleizhu/BiFormer semantic_segmentation/README.md). Official config
# upernet.biformer_base.py: drop path 0.4.
_base_ = ['./upernet_biformer-s_8xb2-160k_ade20k-512x512.py']
model = dict(
    backbone=dict(model_name='biformer_base', pretrained='biformer_base', drop_path_rate=0.4),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
