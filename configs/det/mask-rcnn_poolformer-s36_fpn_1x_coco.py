# PoolFormer-S36 + Mask R-CNN, 1x, COCO. Paper: box AP 41.0, mask AP 37.7
# (MetaFormer; sail-sg/poolformer detection/README.md).
_base_ = ['./mask-rcnn_poolformer-s12_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='poolformer_s36', pretrained='poolformer_s36'))
