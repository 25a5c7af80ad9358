# PoolFormer-S12 + UperNet, 160k iterations x 16 images, ADE20K 512x512. Not a setup of the PoolFormer paper or
# repository (no reported number): PoolFormer's segmentation backbone (GroupNorm(1) on each output) with Swin's UperNet
# recipe (mmseg's swin-tiny UperNet config: AdamW lr 6e-5 wd 0.01, no decay on norms, linear warmup 1500 iterations
# then poly decay 1.0, 8 GPUs x 2 images).
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='poolformer_s12',
        pretrained='poolformer_s12',
        out_indices=(0, 1, 2, 3),
        out_norm='GN1',
        drop_path_rate=0.1),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
    auxiliary_head=dict(in_channels=320))
