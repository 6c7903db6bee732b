# Table 4b: latent dimension D = 32.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_cfg=dict(latent_dim=32)))
