# PoolFormer-S36 + RetinaNet, 1x, COCO. Paper: box AP 39.5 (MetaFormer; sail-sg/poolformer detection/README.md).
_base_ = ['./retinanet_poolformer-s12_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='poolformer_s36', pretrained='poolformer_s36'))
