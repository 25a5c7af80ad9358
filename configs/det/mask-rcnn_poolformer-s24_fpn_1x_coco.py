# PoolFormer-S24 + Mask R-CNN, 1x, COCO. Paper: box AP 40.1, mask AP 37.0
# (MetaFormer; sail-sg/poolformer detection/README.md).
_base_ = ['./mask-rcnn_poolformer-s12_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='poolformer_s24', pretrained='poolformer_s24'))
