# Agent-PVT-S + RetinaNet, 1x, COCO. Paper: box AP 44.1 (Agent Attention, ECCV 2024;
# LeapLabTHU/Agent-Attention downstream/detection/README.md). Official config agent_pvt_s_rtn_1x_12-16-28-28.py.
_base_ = ['./retinanet_agent-pvt-t_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='agent_pvt_small', pretrained='agent_pvt_small'))
