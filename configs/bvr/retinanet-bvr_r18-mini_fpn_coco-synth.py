# RetinaNet + BVR on the CPU set: retinanet_r18-mini_fpn_coco-synth.py (same backbone, data, schedule, seed) with its
# RetinaHead wrapped by RelationNet++'s BVR head at the same width (32 channels, 4 attention heads, the released
# keypoint / key-selection settings; a 41x41 location grid for 128 px images). Not a setup of the paper; the
# CPU cycle test (tests/mm/test_bvr_cycle.py) and the ablation (tools/bvr_ablation.py) use it.
_base_ = ['./retinanet_r18-mini_fpn_coco-synth.py']
custom_imports = dict(imports=['attnzoo.heads.detection', 'attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    bbox_head=dict(
        _delete_=True,
        type='BVRHead',
        bbox_head_cfg=dict(
            type='RetinaHead', num_classes=80, in_channels=32, stacked_convs=2, feat_channels=32,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        keypoint_head_cfg=dict(
            type='KeypointHead', num_classes=80, in_channels=32, feat_channels=32, stacked_convs=1,
            strides=[8, 16, 32, 64, 128], logits_convs=1,
            head_types=['top_left_corner', 'bottom_right_corner', 'center'],
            loss_offset=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
            loss_cls=dict(type='GaussianFocalLoss', loss_weight=0.25)),
        cls_keypoint_cfg=dict(keypoint_types=['center'], with_relation=True),
        reg_keypoint_cfg=dict(keypoint_types=['top_left_corner', 'bottom_right_corner'], with_relation=True),
        keypoint_cfg=dict(max_keypoint_num=20, keypoint_score_thr=0.0),
        feature_selection_cfg=dict(selection_method='index', cross_level_topk=50, cross_level_selection=True),
        num_attn_heads=4,
        scale_position=False,
        pos_cfg=dict(base_size=[40, 40], log_scale=True)),
    train_cfg=dict(
        _delete_=True,
        bbox=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
        keypoint=dict(assigner=dict(type='PointKptAssigner'))))
