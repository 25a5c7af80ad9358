# Agent-Swin-S + Semantic FPN, 80k iterations x 16 images, ADE20K 512x512. Not a setup of the Agent Attention paper
# or repository (no reported number); as fpn_agent-swin-t_8xb2-80k_ade20k-512x512.py.
_base_ = ['./fpn_agent-swin-t_8xb2-80k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='agent_swin_small', pretrained='agent_swin_small'))
