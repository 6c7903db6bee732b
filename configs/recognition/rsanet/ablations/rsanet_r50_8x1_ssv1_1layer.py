# Supp. Table 2b / Table 4a: one RSA layer, in stage 4 (res4, block 3; FLOPs
# and parameters are the same in any block but the first).
_base_ = ['../rsanet_r50_8x1_ssv1.py']

model = dict(backbone=dict(rsa_blocks=((), (), (3, ), ())))
