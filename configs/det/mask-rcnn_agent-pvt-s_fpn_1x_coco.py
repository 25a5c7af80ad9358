# Agent-PVT-S + Mask R-CNN, 1x, COCO. Paper: box AP 44.5, mask AP 41.2 (Agent Attention, ECCV 2024;
# LeapLabTHU/Agent-Attention downstream/detection/README.md). Official config agent_pvt_s_mrcnn_1x_12-16-28-28.py:
# drop path 0.2.
_base_ = ['./mask-rcnn_agent-pvt-t_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='agent_pvt_small', pretrained='agent_pvt_small', drop_path_rate=0.2))
