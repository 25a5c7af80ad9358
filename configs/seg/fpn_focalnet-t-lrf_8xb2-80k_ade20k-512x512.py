# FocalNet-T (LRF) + Semantic FPN, 80k iterations x 16 images, ADE20K 512x512. Not a setup of the FocalNet paper or
# repository (no reported number); as fpn_focalnet-t-srf_8xb2-80k_ade20k-512x512.py with three focal levels.
_base_ = ['./fpn_focalnet-t-srf_8xb2-80k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='focalnet_tiny_lrf', pretrained='focalnet_tiny_lrf'))
