# FocalNet-T (LRF) + RetinaNet, 1x, COCO. Not a setup of the FocalNet paper or repository (no reported number);
# as retinanet_focalnet-t-srf_fpn_1x_coco.py with three focal levels (9/11/13).
_base_ = ['./retinanet_focalnet-t-srf_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='focalnet_tiny_lrf', pretrained='focalnet_tiny_lrf'))
