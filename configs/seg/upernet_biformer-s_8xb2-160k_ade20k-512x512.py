# BiFormer-S + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 49.8 (50.8 multi-scale + flip)
# (BiFormer, CVPR 2023; rayleizhu/BiFormer semantic_segmentation/README.md).
# Setup of rayleizhu/BiFormer semantic_segmentation/configs/ade20k/upernet.biformer_small.py (Swin's UperNet recipe):
# n_win=8 with auto_pad, a LayerNorm2d on each output, drop path 0.3, AdamW lr 6e-5 wd 0.01 with no decay on norms,
# linear warmup 1500 iterations then poly decay 1.0, 8 GPUs x 2 images; trained with AMP (add --amp).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_small',
        pretrained='biformer_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        model_kwargs=dict(n_win=8, auto_pad=True, extra_norms=True)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256))
