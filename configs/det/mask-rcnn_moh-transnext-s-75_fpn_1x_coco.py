# MoH-ViT-S-75 (MoH-TransNeXt-Small, 75% heads) + Mask R-CNN, 1x, COCO. Not a setup of the MoH paper (it reports
# ImageNet classification only for MoH-ViT; SkyworkAI/MoH ships no detection code): the TransNeXt Mask R-CNN 1x
# recipe (the TransNeXt-T config this inherits; detection/maskrcnn/configs/mask_rcnn_transnext_small_fpn_1x_coco.py
# sets drop path 0.6 for Small) with the MoH backbone.
# The MoH load-balancing loss is not added by mmdet's runner (only `zoo train` adds it); the backbone trains without it.
_base_ = ['./mask-rcnn_transnext-t_fpn_1x_coco.py']

model = dict(backbone=dict(model_name='moh_transnext_small_75', pretrained='moh_transnext_small_75', drop_path_rate=0.6))
