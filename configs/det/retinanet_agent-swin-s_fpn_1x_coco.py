# Agent-Swin-S + RetinaNet, 1x, COCO. Not a setup of the Agent Attention paper or repository (no reported number);
# as retinanet_agent-swin-t_fpn_1x_coco.py.
_base_ = ['./retinanet_agent-swin-t_fpn_1x_coco.py']
model = dict(backbone=dict(model_name='agent_swin_small', pretrained='agent_swin_small'))
