# PoolFormer-S24 + UperNet, 160k iterations x 16 images, ADE20K 512x512. Not a setup of the PoolFormer paper or
# repository (no reported number); as upernet_poolformer-s12_8xb2-160k_ade20k-512x512.py.
_base_ = ['./upernet_poolformer-s12_8xb2-160k_ade20k-512x512.py']
model = dict(backbone=dict(model_name='poolformer_s24', pretrained='poolformer_s24'))
