# Table 2 at R18 scale on SynthMotion: TSN-ResNet18, 8 frames, one 3x3
# convolution of res4 (block 1) replaced by one RSA layer (kV + kR, XV + XR,
# the paper's last row of Table 2), M = 5x3x3 as for every transform of this
# comparison. Data, schedule and head are those of
# ../rsanet_r18_8x1_synthmotion.py, which has 4 such layers (res2-res5).
_base_ = ['../rsanet_r18_8x1_synthmotion.py']

model = dict(backbone=dict(rsa_blocks=((), (), (1, ), ())))
