# Agent-Swin-S + Mask R-CNN, 1x with multi-scale crop training, COCO. Paper: box AP 47.2, mask AP 42.7
# (Agent Attention, ECCV 2024; LeapLabTHU/Agent-Attention downstream/detection/README.md). Official config
# agent_swin_s_mrcnn_1x_9-12-14-7.py: as Agent-Swin-T (drop path 0.1 there too).
_base_ = ['./mask-rcnn_agent-swin-t_fpn_ms-crop-1x_coco.py']
model = dict(backbone=dict(model_name='agent_swin_small', pretrained='agent_swin_small'))
