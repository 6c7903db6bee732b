# Supp. Table 2b: no RSA layer, the TSN-ResNet50 baseline.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_blocks=((), (), (), ())))
