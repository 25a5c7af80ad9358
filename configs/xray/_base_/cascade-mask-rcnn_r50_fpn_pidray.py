# mmdet's Cascade Mask R-CNN (R-50 FPN) with the 12 PIDray classes, as in the official SDANet/PIDray configs
# (lutao2021/PIDray configs/cascade_mask_rcnn_r101_with_R0R1.py; bywang2018/security-dataset
# configs/sda_cascade_mask_rcnn_fpn_1x.py): class-agnostic regression, three stages with IoU 0.5/0.6/0.7.
_base_ = ['mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py']

num_classes = 12


def _stage(stds):
    return dict(
        type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=1024, roi_feat_size=7, num_classes=num_classes,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


model = dict(
    roi_head=dict(
        bbox_head=[_stage([0.1, 0.1, 0.2, 0.2]), _stage([0.05, 0.05, 0.1, 0.1]),
                   _stage([0.033, 0.033, 0.067, 0.067])],
        mask_head=dict(num_classes=num_classes)))
