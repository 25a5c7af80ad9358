# SDANet (Wang et al., ICCV 2021): Cascade Mask R-CNN, ResNet-101, FPN + selective dense attention (dense channel and
# spatial attention over all five levels + global-context dependency refinement, per level), 500 px, 12 epochs.
# Official code: bywang2018/security-dataset (mmdet 1.x), lutao2021/PIDray (mmdet 2.25 neck `AttFPN`).
# Official checkpoints load after attnzoo.heads.xray.convert_official_sdanet_checkpoint (renames the attention keys).
# Paper numbers (ICCV 2021, Table 4, SDANet, AP in %):
#   box AP   easy 71.2 / hard 64.2 / hidden 49.5 / overall 61.6
#   mask AP  easy 59.9 / hard 52.0 / hidden 37.4 / overall 49.8
# (Not reproduced here: PIDray itself is not downloadable on this machine.)
_base_ = ['./cascade-mask-rcnn_r101_fpn_1x_pidray.py']

model = dict(neck=dict(type='SDANetFPN'))
