# Supp. Table 2c: 'none' normalisation of query, key and value.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_cfg=dict(norm='none')))
