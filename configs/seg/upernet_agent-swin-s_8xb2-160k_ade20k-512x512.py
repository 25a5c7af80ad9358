# Agent-Swin-S + UperNet, 160k iterations x 16 images, ADE20K 512x512. Paper: mIoU 48.08 (Agent Attention, ECCV 2024;
# LeapLabTHU/Agent-Attention downstream/segmentation/README.md). Official config upernet_agent_swin_s_9-12-14-7.py.
_base_ = ['./upernet_agent-swin-t_8xb2-160k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='agent_swin_small', pretrained='agent_swin_small'))
