# PoolFormer-S36 + Semantic FPN, 40k iterations x 32 images, ADE20K 512x512. Paper: mIoU 42.0
# (MetaFormer, CVPR 2022; sail-sg/poolformer segmentation/README.md).
_base_ = ['./fpn_poolformer-s12_8xb4-40k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='poolformer_s36', pretrained='poolformer_s36'))
