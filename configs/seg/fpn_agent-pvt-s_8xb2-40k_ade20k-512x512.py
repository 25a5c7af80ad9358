# Agent-PVT-S + Semantic FPN, 40k iterations, ADE20K 512x512. Paper: mIoU 44.18 (Agent Attention, ECCV 2024;
# LeapLabTHU/Agent-Attention downstream/segmentation/README.md). Official config fpn_agent_pvt_s_12-16-28-28.py.
_base_ = ['./fpn_agent-pvt-t_8xb2-40k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='agent_pvt_small', pretrained='agent_pvt_small'))
