# BiFormer-S + RetinaNet, 1x, COCO. Paper: box AP 45.9
# (BiFormer: Vision Transformer with Bi-Level Routing Attention, CVPR 2023; rayleizhu/BiFormer
# object_detection/README.md, which also lists 47.3 reproduced at code release).
# Setup of rayleizhu/BiFormer object_detection/configs/coco/retinanet.1x.biformer_small.py: n_win=16 regions with
# auto_pad (any input size), a LayerNorm2d on each output (extra_norms), drop path 0.2, AdamW lr 1e-4 wd 1e-4 (no
# parameter-wise rules there), 8 GPUs x 2 images, 12 epochs, steps at 8 and 11; trained with AMP (add --amp).
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.openmmlab'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='ZooBackbone',
        model_name='biformer_small',
        pretrained='biformer_small',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        model_kwargs=dict(n_win=16, auto_pad=True, extra_norms=True)),
    neck=dict(in_channels=[64, 128, 256, 512], start_level=1, add_extra_convs='on_input', num_outs=5))

optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))
# The official layout returns stage 0 through its extra norm although RetinaNet's FPN starts at stride 8.
find_unused_parameters = True
