# Agent-PVT-T + RetinaNet, 1x, COCO. Paper: box AP 40.3
# (Agent Attention, ECCV 2024; LeapLabTHU/Agent-Attention downstream/detection/README.md).
# Setup of downstream/detection/configs/agent_pvt/agent_pvt_t_rtn_1x_12-16-28-28.py: downstream agent grids
# 12x12/16x16/28x28/28x28 (agent biases interpolated), drop path 0.1, AdamW lr 1e-4 wd 1e-4 (no parameter-wise
# rules there), 8 GPUs x 2 images, 12 epochs, steps at 8 and 11.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='agent_pvt_tiny',
        pretrained='agent_pvt_tiny',
        out_indices=(1, 2, 3),
        drop_path_rate=0.1,
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)])),
    neck=dict(in_channels=[128, 320, 512], start_level=0, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
