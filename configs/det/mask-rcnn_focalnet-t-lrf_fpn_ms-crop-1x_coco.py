# FocalNet-T (LRF) + Mask R-CNN, 1x with multi-scale crop training, COCO. Paper: box AP 46.1, mask AP 41.5
# (Focal Modulation Networks, NeurIPS 2022; microsoft/FocalNet README.md). Official config
# mask_rcnn_focalnet_tiny_patch4_mstrain_480-800_adamw_1x_coco_lrf.py: as SRF with three focal levels (9/11/13).
_base_ = ['./mask-rcnn_focalnet-t-srf_fpn_ms-crop-1x_coco.py']
model = dict(backbone=dict(model_name='focalnet_tiny_lrf', pretrained='focalnet_tiny_lrf'))
