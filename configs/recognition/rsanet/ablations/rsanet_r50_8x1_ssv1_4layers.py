# Supp. Table 2b: four RSA layers, in stages 4 and 5.
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_blocks=((), (), (1, 3, 5), (1, ))))
