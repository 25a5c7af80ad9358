# Agent-PVT-S + UperNet, 160k iterations x 16 images, ADE20K 512x512. Not a setup of the Agent Attention paper or
# repository (no reported number); as upernet_agent-pvt-t_8xb2-160k_ade20k-512x512.py.
_base_ = ['./upernet_agent-pvt-t_8xb2-160k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='agent_pvt_small', pretrained='agent_pvt_small'))
