# RelationNet++ (Chi, Wei, Hu, NeurIPS 2020, arXiv 2010.15831): RetinaNet + BVR, ResNet-50, FPN (GN), 1x, single scale.
# Official: microsoft/RelationNet2 configs/bvr/retinanet_r50_fpn_relation_coco_1x.py (mmdet 2.x), commit 0930752.
# Official README (COCO val2017, single-scale test): bbox mAP 38.5 / AP50 59.1 / AP75 40.9 (not reproduced here: COCO
# is not on this machine). Official checkpoint (Google Drive, README "Link"):
#   https://drive.google.com/file/d/1iKygKRi6EmqRsEQgBhJTfToWweVXEltB/view
# Its keys load as they are (attnzoo.heads.detection.convert_official_bvr_checkpoint checks it is a BVR RetinaNet).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.heads.detection', 'attnzoo.openmmlab'], allow_failed_imports=False)

num_classes = 80
norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    neck=dict(norm_cfg=norm_cfg),  # the official r50 config normalises FPN and heads with GN
    bbox_head=dict(
        _delete_=True,
        type='BVRHead',
        bbox_head_cfg=dict(
            type='RetinaHead',
            num_classes=num_classes,
            in_channels=256,
            stacked_convs=4,
            feat_channels=256,
            norm_cfg=norm_cfg,
            anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=3,
                                  ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[1.0, 1.0, 1.0, 1.0]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        keypoint_pos='input',
        keypoint_head_cfg=dict(
            type='KeypointHead',
            num_classes=num_classes,
            in_channels=256,
            feat_channels=256,
            stacked_convs=2,
            strides=[8, 16, 32, 64, 128],
            shared_stacked_convs=0,
            logits_convs=1,
            head_types=['top_left_corner', 'bottom_right_corner', 'center'],
            corner_pooling=False,
            loss_offset=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0),
            loss_cls=dict(type='GaussianFocalLoss', loss_weight=0.25),
            norm_cfg=norm_cfg),
        cls_keypoint_cfg=dict(keypoint_types=['center'], with_relation=True),
        reg_keypoint_cfg=dict(keypoint_types=['top_left_corner', 'bottom_right_corner'], with_relation=True),
        keypoint_cfg=dict(max_keypoint_num=20, keypoint_score_thr=0.0),
        feature_selection_cfg=dict(selection_method='index', cross_level_topk=50, cross_level_selection=True),
        num_attn_heads=8,
        scale_position=False,
        pos_cfg=dict(base_size=[400, 400], log_scale=True)),
    train_cfg=dict(
        _delete_=True,
        bbox=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
            sampler=dict(type='PseudoSampler'),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        keypoint=dict(assigner=dict(type='PointKptAssigner'))),
    test_cfg=dict(nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=100))
