# TransNeXt-Tiny + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 51.1 (single scale; 51.5 / 51.7
# multi-scale + flip, interpolated / extrapolated position bias) (TransNeXt, CVPR 2024; DaiShiResearch/TransNeXt
# segmentation/upernet/README.md).
# Setup of segmentation/upernet/configs/upernet_transnext_tiny_512x512_160k_ade20k_ss.py: the TransNeXt-Tiny backbone
# (drop path 0.4; img_size 512 with the relative positions scaled by the 224 pre-training size: the zoo model's
# default, its tables follow the input, the same tables for the 512 crops), Swin's UperNet on ADE20K, AdamW lr 6e-5
# wd 0.05 without decay on query_embedding, relative_pos_bias_local, cpb, temperature and the norms, linear warmup 1500
# iterations from 1e-6 then poly decay 1.0 to 0, sliding-window test (512 crops, stride 341), 8 GPUs x 2 images.
_base_ = ['mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='transnext_tiny',
        pretrained='transnext_tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4),
    decode_head=dict(in_channels=[72, 144, 288, 576]),
    auxiliary_head=dict(in_channels=288),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, custom_keys={
        'query_embedding': dict(decay_mult=0.), 'relative_pos_bias_local': dict(decay_mult=0.),
        'cpb': dict(decay_mult=0.), 'temperature': dict(decay_mult=0.), 'norm': dict(decay_mult=0.)}))
