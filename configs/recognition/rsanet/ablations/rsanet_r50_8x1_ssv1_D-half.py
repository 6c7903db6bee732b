# Table 4b: latent dimension D = Cq / 2, per stage (Cq = 8, 16, 32, 64).
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_cfg=dict(latent_dim=(4, 8, 16, 32))))
