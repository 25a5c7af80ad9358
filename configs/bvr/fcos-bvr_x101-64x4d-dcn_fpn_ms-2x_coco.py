# RelationNet++ (NeurIPS 2020): FCOS (GIoU, centre sampling, centerness on reg, norm_on_bbox, DCN last tower conv) + BVR,
# ResNeXt-101 64x4d DCNv2, FPN (P6/P7 on outputs), multi-scale training (400-1200), 20 epochs, grad clip 35.
# Official: microsoft/RelationNet2 configs/bvr/fcos_x101_dcn_fpn_relation_coco_2x.py (mmdet 2.x), commit 0930752.
# Official README (COCO val2017): bbox mAP 48.7 / AP50 68.0 / AP75 52.9 (not reproduced here: no COCO on this machine).
# Official checkpoint: https://drive.google.com/file/d/1IT1YBnNLrGQs-Be_drfF2ntEq4OjtCaO/view (keys load as they are).
_base_ = ['./retinanet-bvr_x101-64x4d-dcn_fpn_ms-2x_coco.py']

model = dict(
    neck=dict(add_extra_convs='on_output'),
    bbox_head=dict(
        bbox_head_cfg=dict(
            _delete_=True,
            type='FCOSHead', num_classes=80, in_channels=256, stacked_convs=4, feat_channels=256,
            strides=[8, 16, 32, 64, 128], norm_cfg=None,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=1.0),
            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            norm_on_bbox=True, centerness_on_reg=True, dcn_on_last_conv=True, center_sampling=True,
            center_sample_radius=1.5, conv_bias=True),
        keypoint_head_cfg=dict(logits_convs=0)),
    # the official train_cfg names an ATSSAssigner for FCOS, which FCOSHead never reads (it assigns by itself)
    train_cfg=dict(bbox=dict(_delete_=True, assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1,
                             pos_weight=-1, debug=False)))
optim_wrapper = dict(
    optimizer=dict(lr=0.01), paramwise_cfg=dict(bias_lr_mult=2.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=35, norm_type=2))
