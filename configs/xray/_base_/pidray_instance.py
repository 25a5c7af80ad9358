# PIDray instance segmentation (Wang et al., "Towards Real-World Prohibited Item Detection: A Large-Scale X-ray
# Benchmark", ICCV 2021): train on the train split, evaluate box and mask AP on the easy / hard / hidden test splits
# and on all three together, in one table (PIDrayMetric).
# Layout as released: <data_root>/annotations/xray_{train,test_easy,test_hard,test_hidden}.json and images in
# <data_root>/{train,easy,hard,hidden}/. `python tools/make_pidray.py --out data/pidray` writes a synthetic set with
# the same layout.
# Image size: the official configs resize to (500, 500) with keep_ratio and pad to a multiple of 32.
custom_imports = dict(imports=['attnzoo.heads.xray', 'attnzoo.openmmlab'], allow_failed_imports=False)

dataset_type = 'PIDrayDataset'
data_root = 'data/pidray/'
backend_args = None
image_scale = (500, 500)

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    # 'split' lets PIDrayMetric group the predictions by test split
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'split')),
]

train_dataloader = dict(
    batch_size=2,  # per GPU; SDANet's channel attention uses BatchNorm on pooled features and needs >= 2
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        split='train',
        data_root=data_root,
        ann_file='annotations/xray_train.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))

test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(type=dataset_type, split='easy', data_root=data_root,
                 ann_file='annotations/xray_test_easy.json', data_prefix=dict(img='easy/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
            dict(type=dataset_type, split='hard', data_root=data_root,
                 ann_file='annotations/xray_test_hard.json', data_prefix=dict(img='hard/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
            dict(type=dataset_type, split='hidden', data_root=data_root,
                 ann_file='annotations/xray_test_hidden.json', data_prefix=dict(img='hidden/'),
                 test_mode=True, pipeline=test_pipeline, backend_args=backend_args),
        ]))
val_dataloader = test_dataloader

test_evaluator = dict(
    type='PIDrayMetric',
    ann_files=dict(
        easy=data_root + 'annotations/xray_test_easy.json',
        hard=data_root + 'annotations/xray_test_hard.json',
        hidden=data_root + 'annotations/xray_test_hidden.json'),
    metric=['bbox', 'segm'])
val_evaluator = test_evaluator
