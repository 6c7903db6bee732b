# Supp. Table 2a: L = 16 queries, latent dimension D = 16.
_base_ = ['rsanet_r50_8x1_ssv1_D-16.py']

model = dict(backbone=dict(rsa_cfg=dict(num_queries=16)))
