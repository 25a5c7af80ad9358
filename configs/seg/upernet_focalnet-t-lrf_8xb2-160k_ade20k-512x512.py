# FocalNet-T (LRF) + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 46.8 (47.8 multi-scale)
# (Focal Modulation Networks, NeurIPS 2022; microsoft/FocalNet README.md). Official config
# upernet_focalnet_tiny_patch4_512x512_160k_ade20k_lrf.py: as SRF with three focal levels (9/11/13).
_base_ = ['./upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='focalnet_tiny_lrf', pretrained='focalnet_tiny_lrf'))
