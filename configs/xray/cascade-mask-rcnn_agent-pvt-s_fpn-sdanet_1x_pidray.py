# The zoo's own SDANet variant: Cascade Mask R-CNN with an Agent-PVT-S backbone (Han et al., ECCV 2024) through
# ZooBackbone, FPN + SDANet, 500 px, 12 epochs on PIDray. No paper numbers exist for this combination.
# Backbone and optimiser as the official Agent-PVT-S Mask R-CNN config (LeapLabTHU/Agent-Attention
# downstream/detection/configs/agent_pvt/agent_pvt_s_mrcnn_1x_12-16-28-28.py): more agents for dense prediction
# (downstream_agent_shapes 12-16-28-28), biases interpolated to the token grids, drop path 0.2; AdamW lr 2e-4,
# wd 1e-4.
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
        model_name='agent_pvt_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)]),
        # ImageNet weights: a path or card name for attnzoo.load_checkpoint, e.g. pretrained='agent_pvt_small'
        pretrained=None),
    neck=dict(type='SDANetFPN', in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0002, weight_decay=0.0001))
auto_scale_lr = dict(enable=False, base_batch_size=16)
