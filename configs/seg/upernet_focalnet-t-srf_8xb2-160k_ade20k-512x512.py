# FocalNet-T (SRF) + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 46.5 (47.2 multi-scale)
# (Focal Modulation Networks, NeurIPS 2022; microsoft/FocalNet README.md).
# Setup of microsoft/FocalNet segmentation/configs/focalnet/upernet_focalnet_tiny_patch4_512x512_160k_ade20k_srf.py
# (Swin's UperNet recipe): focal kernels 9/11 (the 3/5 ImageNet kernels zero-padded on load), a LayerNorm on each
# output, drop path 0.3, AdamW lr 6e-5 wd 0.01 with no decay on norms, linear warmup 1500 iterations then poly decay
# 1.0, 8 GPUs x 2 images.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='focalnet_tiny_srf',
        pretrained='focalnet_tiny_srf',
        out_indices=(0, 1, 2, 3),
        out_norm='LN2d',
        drop_path_rate=0.3,
        model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
    auxiliary_head=dict(in_channels=384))
