# Baseline for the SDANet ablation: Cascade Mask R-CNN, ResNet-101 + plain FPN, 500 px, 12 epochs on PIDray.
# Schedule as the official configs: SGD lr 0.02 for a total batch of 16, momentum 0.9, wd 1e-4, linear warmup over
# 500 iterations, lr x0.1 after epochs 8 and 11 (mmdet's schedule_1x).
# The paper's main table compares this detector with and without SDANet; SDANet's own numbers are in
# cascade-mask-rcnn_r101_fpn-sdanet_1x_pidray.py.
_base_ = [
    './_base_/cascade-mask-rcnn_r50_fpn_pidray.py',
    './_base_/pidray_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(depth=101, init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

# 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr for other totals.
auto_scale_lr = dict(enable=False, base_batch_size=16)
