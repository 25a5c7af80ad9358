# The zoo's own SDANet variant: Cascade Mask R-CNN with a BiFormer-S backbone (Zhu et al., CVPR 2023) through
# ZooBackbone, FPN + SDANet, 500 px, 12 epochs on PIDray. No paper numbers exist for this combination.
# Backbone and optimiser as the official BiFormer-S Mask R-CNN config (rayleizhu/BiFormer
# object_detection/configs/coco/maskrcnn.1x.biformer_small.py): n_win 16, auto_pad (any input size), a LayerNorm2d on
# each returned stage (extra_norms, as BiFormer_mm), drop path 0.2; AdamW lr 1e-4, wd 0.05, no decay on norms.
_base_ = [
    './_base_/cascade-mask-rcnn_r50_fpn_pidray.py',
    './_base_/pidray_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['attnzoo.heads.xray', 'attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(n_win=16, auto_pad=True, extra_norms=True),
        # ImageNet weights: a path or card name for attnzoo.load_checkpoint, e.g. pretrained='biformer_small'
        pretrained=None),
    neck=dict(type='SDANetFPN', in_channels=[64, 128, 256, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0))
auto_scale_lr = dict(enable=False, base_batch_size=16)
