# RetinaNet + BVR (RelationNet++'s r50 recipe: GN FPN and heads, 1x) on the zoo's BiFormer-S through ZooBackbone.
# A composition of this project, not a configuration of either paper: no paper number exists for it and none has
# been measured here (no COCO on this machine). BiFormer-S as in configs/det/retinanet_biformer-s_fpn_1x_coco.py
# (n_win 16 with auto_pad, extra norms, drop path 0.2, official ImageNet weights through the biformer_small card,
# AdamW lr 1e-4 wd 1e-4 as the BiFormer detection recipe).
_base_ = ['./retinanet-bvr_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['attnzoo.heads.detection', 'attnzoo.openmmlab'], allow_failed_imports=False)

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
