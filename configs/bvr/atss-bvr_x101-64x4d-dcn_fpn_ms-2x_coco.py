# RelationNet++ (NeurIPS 2020): ATSS (GIoU x2, GN head) + BVR with one location embedding shared by the cls and reg
# transformers, ResNeXt-101 64x4d DCNv2, FPN (P6/P7 on outputs), multi-scale training (400-1200), 20 epochs.
# Official: microsoft/RelationNet2 configs/bvr/atss_x101_dcn_fpn_relation_coco_2x.py (mmdet 2.x), commit 0930752.
# Official README (COCO val2017): bbox mAP 50.6 / AP50 69.5 / AP75 55.3 (not reproduced here: no COCO on this machine).
# Official checkpoint: https://drive.google.com/file/d/16kTxTPGIN4O4wFHKhJMdFP_rlZ7eXde9/view
# The official config also passes dcn_on_last_conv=True to ATSSHead, an argument mmdet's ATSSHead does not take
# (3.3 refuses it); it is left out here, so if the released file holds a deformable last tower conv
# (bbox_head.bbox_head.cls_convs.3.conv.conv_offset.*), the strict load names those keys.
_base_ = ['./retinanet-bvr_x101-64x4d-dcn_fpn_ms-2x_coco.py']

model = dict(
    neck=dict(add_extra_convs='on_output'),
    bbox_head=dict(
        bbox_head_cfg=dict(
            _delete_=True,
            type='ATSSHead', num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
            anchor_generator=dict(type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1,
                                  strides=[8, 16, 32, 64, 128]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0],
                            target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
        shared_positional_encoding_outer=True),
    train_cfg=dict(bbox=dict(_delete_=True, assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                             pos_weight=-1, debug=False)))
