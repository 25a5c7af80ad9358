# The CPU demo (zoo/tasks/xray/demo.py): a small SDANet Cascade Mask R-CNN with a tiny BiFormer backbone (the zoo's
# biformer_tiny at half width and depth, through ZooBackbone, randomly initialised: no weights can be downloaded
# here), trained for 600 seeded iterations (a few CPU minutes) on the synthetic PIDray-style set of
# tools/make_pidray.py (128 px images). Narrow neck and heads keep a CPU iteration short; the
# structure (FPN + SDANet on five levels, three cascade stages, mask head, per-split evaluation) is the paper's.
# data_root is set by the demo; `python tools/make_pidray.py --out data/pidray_synthetic` makes the default one.
_base_ = [
    './_base_/cascade-mask-rcnn_r50_fpn_pidray.py',
    './_base_/pidray_instance.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['attnzoo.heads.xray', 'attnzoo.openmmlab'], allow_failed_imports=False)

channels = 64


def _stage(stds):
    return dict(
        type='Shared2FCBBoxHead', in_channels=channels, fc_out_channels=128, roi_feat_size=7, num_classes=12,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=stds),
        reg_class_agnostic=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0, loss_weight=1.0))


def _rcnn_train(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
        mask_size=28, pos_weight=-1, debug=False)


model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_tiny',
        # BiFormer-T's block design at half width and depth: the released BRA (top-k 1/4/16, global last stage),
        # 4x4 routing regions for 128 px inputs, auto_pad and per-stage LayerNorm2d as the official detection
        # backbone; about half of PoolFormer-S12's CPU time per iteration
        model_kwargs=dict(depth=(2, 2, 4, 2), embed_dim=(32, 64, 128, 256), qk_dims=(32, 64, 128, 256), n_win=4,
                          auto_pad=True, extra_norms=True),
        out_indices=(0, 1, 2, 3),
        pretrained=None),
    neck=dict(type='SDANetFPN', in_channels=[32, 64, 128, 256], out_channels=channels),
    rpn_head=dict(in_channels=channels, feat_channels=channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels),
        bbox_head=[_stage([0.1, 0.1, 0.2, 0.2]), _stage([0.05, 0.05, 0.1, 0.1]),
                   _stage([0.033, 0.033, 0.067, 0.067])],
        mask_roi_extractor=dict(out_channels=channels),
        mask_head=dict(in_channels=channels, conv_out_channels=32, num_convs=1)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=400, max_per_img=150),
        rcnn=[_rcnn_train(0.5), _rcnn_train(0.6), _rcnn_train(0.7)]),
    test_cfg=dict(
        rpn=dict(nms_pre=300, max_per_img=100),
        rcnn=dict(max_per_img=20)))

# -- data: the synthetic set at 128 px ---------------------------------------------------------------------------------
data_root = 'data/pidray_synthetic/'
image_scale = (128, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'split')),
]
train_dataloader = dict(
    batch_size=2,  # SDANet's BatchNorm on pooled features needs >= 2
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=True, min_size=8)))


def _test_split(split):
    return dict(type='PIDrayDataset', split=split, data_root=data_root,
                ann_file=f'annotations/xray_test_{split}.json', data_prefix=dict(img=f'{split}/'),
                test_mode=True, pipeline=test_pipeline)


test_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(type='ConcatDataset', datasets=[_test_split('easy'), _test_split('hard'), _test_split('hidden')]))
test_evaluator = dict(
    type='PIDrayMetric',
    ann_files={split: f'{data_root}annotations/xray_test_{split}.json' for split in ('easy', 'hard', 'hidden')},
    metric=['bbox', 'segm'])
# no validation while training (tools/test.py evaluates afterwards)
val_dataloader = None
val_evaluator = None
val_cfg = None

# -- schedule: a fixed number of iterations from scratch (zoo/tasks/xray/demo.py DEMO_ITERATIONS), seeded ------------------
train_cfg = dict(type='IterBasedTrainLoop', max_iters=600)
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.001, weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100000, save_last=True, max_keep_ckpts=1))
# only a guard: the demo sets it from the time its step has left, and says so when it ends training early
custom_hooks = [dict(type='TrainTimeBudgetHook', max_minutes=30.0)]
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
