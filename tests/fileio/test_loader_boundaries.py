# Copyright (c) mmrsa contributors. All rights reserved.
"""The loaders at their boundaries: the hash in a file name (every digit it
gives, 8 of them at the least), the chunked sha256 at chunk edges, the check
of what was loaded at any depth, the ensemble's weights and output file,
and the backbone's ImageNet loading of the checkpoint forms found in the
wild (with or without ``state_dict``/``model``/``module.``, without BN step
counters, with a tensor of another shape)."""
import hashlib
import io
import os
from collections import OrderedDict

import numpy as np
import pytest
import torch

import mmrsa  # noqa: F401
from mmrsa.evaluation import EnsembleError, ensemble, write_dump
from mmrsa.fileio import checkpoint as loader
from mmrsa.fileio.atomic import OverwriteRefusedError, refuse_existing
from mmrsa.fileio.checkpoint import (CheckpointFileError,
                                     UnsafeCheckpointError, sha256_file)
from mmrsa.models.backbones import RSANet


# --------------------------------------------------------------------- #
# the hash in a file name
# --------------------------------------------------------------------- #
def _checkpoint_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.arange(6.)}}, buffer)
    return buffer.getvalue()


def _named(tmp_path, digits: str, data: bytes):
    path = tmp_path / f'model-{digits}.pth'
    path.write_bytes(data)
    return path


@pytest.mark.parametrize('length', [8, 9, 20, 64])
def test_every_digit_of_the_name_is_checked(tmp_path, length):
    data = _checkpoint_bytes()
    digest = hashlib.sha256(data).hexdigest()
    good = _named(tmp_path, digest[:length], data)
    assert loader.safe_torch_load(str(good))['state_dict']['w'].numel() == 6
    # the last digit of the name wrong, the others right
    last = digest[length - 1]
    wrong = digest[:length - 1] + ('0' if last != '0' else '1')
    good.unlink()
    bad = _named(tmp_path, wrong, data)
    with pytest.raises(
            CheckpointFileError,
            match=f'its name says sha256 {wrong}\\.\\.\\., its '
            f'content has sha256 {digest[:length]}\\.\\.\\.'):
        loader.safe_torch_load(str(bad))


def test_seven_hex_digits_are_not_a_hash(tmp_path):
    """``-1234567.pth`` (a step, a date) is an ordinary name: loaded
    without a hash check."""
    path = _named(tmp_path, '0000000', _checkpoint_bytes())
    assert loader.safe_torch_load(str(path))['state_dict']['w'].numel() == 6


@pytest.mark.parametrize('size', [0, 1, 3, 4, 5, 8, 9])
def test_sha256_of_files_at_chunk_edges(tmp_path, size):
    path = tmp_path / 'f.bin'
    data = os.urandom(size)
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(str(path), chunk_size=4) == expected
    assert sha256_file(str(path)) == expected


def test_loaded_data_is_checked_at_any_depth():
    """What was loaded is checked again after loading, however deep a
    numpy value of a non-numeric dtype sits (50 levels here)."""
    value = np.array(['text'], dtype=object)
    nested = value
    for level in range(50):
        nested = {'k': [nested]} if level % 2 else [nested]
    with pytest.raises(UnsafeCheckpointError) as info:
        loader._check_numeric(nested, 'nested.pth')
    assert "has dtype dtype('O')" in info.value.reason
    loader._check_numeric([[{'a': np.arange(3)}]], 'fine.pth')


def test_a_dangling_link_is_not_overwritten_but_force_replaces_it(tmp_path):
    link = tmp_path / 'scores.pkl'
    link.symlink_to(tmp_path / 'gone.pkl')
    with pytest.raises(OverwriteRefusedError, match='already exists'):
        refuse_existing(str(link))
    refuse_existing(str(link), force=True)


# --------------------------------------------------------------------- #
# the ensemble: weights and the output file
# --------------------------------------------------------------------- #
def _dump(path, scores, labels=(0, 1)):
    import pickle
    results = [
        dict(
            pred_score=torch.tensor(s, dtype=torch.float32),
            gt_label=torch.tensor([label]))
        for s, label in zip(scores, labels)
    ]
    with open(path, 'wb') as f:
        pickle.dump(results, f)
    return str(path)


def test_ensemble_weights_zero_for_a_file_is_allowed(tmp_path):
    a = _dump(tmp_path / 'a.pkl', [[0.9, 0.1], [0.2, 0.8]])
    b = _dump(tmp_path / 'b.pkl', [[0.1, 0.9], [0.7, 0.3]])
    result = ensemble([a, b], weights=[1, 0])
    np.testing.assert_allclose(
        result['scores'], [[0.9, 0.1], [0.2, 0.8]], rtol=1e-6)
    result = ensemble([a, b], weights=[0, 2])
    np.testing.assert_allclose(
        result['scores'], [[0.1, 0.9], [0.7, 0.3]], rtol=1e-6)
    with pytest.raises(EnsembleError, match='all zero'):
        ensemble([a, b], weights=[0, 0])
    with pytest.raises(EnsembleError, match='must not be negative'):
        ensemble([a, b], weights=[1, -1e-9])


def test_ensemble_needs_two_files(tmp_path):
    a = _dump(tmp_path / 'a.pkl', [[0.9, 0.1], [0.2, 0.8]])
    with pytest.raises(EnsembleError, match='two or more'):
        ensemble([a])
    assert len(ensemble([a, a])['inputs']) == 2


def test_fused_dump_never_replaces_an_input_through_a_hard_link(tmp_path):
    a = _dump(tmp_path / 'a.pkl', [[0.9, 0.1], [0.2, 0.8]])
    b = _dump(tmp_path / 'b.pkl', [[0.1, 0.9], [0.7, 0.3]])
    linked = tmp_path / 'linked.pkl'
    os.link(a, linked)
    before = open(a, 'rb').read()
    result = ensemble([a, b])
    with pytest.raises(EnsembleError, match='is one of the input dumps'):
        write_dump(result, str(linked), force=True)
    assert open(a, 'rb').read() == before


# --------------------------------------------------------------------- #
# RSANet: the ImageNet checkpoint forms
# --------------------------------------------------------------------- #
def torchvision_resnet18_state_dict(counters: bool = True) -> OrderedDict:
    """A fake ImageNet ResNet-18 in torchvision's layout and key names."""
    gen = torch.Generator().manual_seed(0)
    sd = OrderedDict()

    def conv(name, cout, cin, k):
        sd[f'{name}.weight'] = torch.randn(cout, cin, k, k, generator=gen)

    def bn(name, c):
        sd[f'{name}.weight'] = torch.rand(c, generator=gen) + 0.5
        sd[f'{name}.bias'] = torch.randn(c, generator=gen)
        sd[f'{name}.running_mean'] = torch.randn(c, generator=gen)
        sd[f'{name}.running_var'] = torch.rand(c, generator=gen) + 0.5
        if counters:
            sd[f'{name}.num_batches_tracked'] = torch.tensor(7)

    conv('conv1', 64, 3, 7)
    bn('bn1', 64)
    cin = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            p = f'layer{stage}.{i}'
            conv(f'{p}.conv1', planes, cin, 3)
            bn(f'{p}.bn1', planes)
            conv(f'{p}.conv2', planes, planes, 3)
            bn(f'{p}.bn2', planes)
            if i == 0 and cin != planes:
                conv(f'{p}.downsample.0', planes, cin, 1)
                bn(f'{p}.downsample.1', planes)
            cin = planes
    sd['fc.weight'] = torch.randn(1000, 512, generator=gen)
    sd['fc.bias'] = torch.randn(1000, generator=gen)
    return sd


class RecordingLogger:

    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(('info', msg))

    def warning(self, msg):
        self.lines.append(('warning', msg))


#: RSA in the second block of res3 and res5: the blocks with a
#: downsampling shortcut load from the checkpoint
SMALL = dict(
    depth=18,
    num_segments=4,
    rsa_blocks=((), (1, ), (), (1, )),
    rsa_cfg=dict(kernel_size=(3, 3, 3), num_queries=4))


def _net(**kwargs) -> RSANet:
    return RSANet(**SMALL, **kwargs)


FORMS = {
    'bare': lambda sd: sd,
    'state_dict': lambda sd: {
        'state_dict': sd,
        'meta': {}
    },
    'model': lambda sd: {
        'model': sd
    },
    'module': lambda sd: OrderedDict(
        (f'module.{k}', v) for k, v in sd.items()),
    'state_dict_module': lambda sd: {
        'state_dict': OrderedDict((f'module.{k}', v) for k, v in sd.items())
    },
}


@pytest.mark.parametrize('form,counters', [('bare', True), ('bare', False),
                                           ('state_dict', True),
                                           ('model', False), ('module', True),
                                           ('state_dict_module', False)])
def test_imagenet_checkpoint_forms_load_alike(tmp_path, form, counters):
    sd = torchvision_resnet18_state_dict(counters)
    path = tmp_path / 'resnet18.pth'
    torch.save(FORMS[form](sd), path)
    net = _net()
    assert net.rsa_block_names == ['layer2.1', 'layer4.1']
    logger = RecordingLogger()
    loaded, not_loaded = net.load_imagenet_weights(str(path), logger)
    assert loaded == ['stem'] + [
        name for name, _ in net._blocks() if name not in net.rsa_block_names
    ]
    assert not_loaded == net.rsa_block_names
    assert all(level == 'info' for level, _ in logger.lines), logger.lines
    torch.testing.assert_close(
        net.conv1.conv.weight, sd['conv1.weight'], rtol=0, atol=0)
    for name, block in net._blocks():
        if name in net.rsa_block_names:
            continue
        torch.testing.assert_close(
            block.conv2.conv.weight,
            sd[f'{name}.conv2.weight'],
            rtol=0,
            atol=0)
        torch.testing.assert_close(
            block.conv1.bn.running_var,
            sd[f'{name}.bn1.running_var'],
            rtol=0,
            atol=0)
        # the counters are copied when the file has them, else left at 0
        assert int(
            block.conv1.bn.num_batches_tracked) == (7 if counters else 0)
    torch.testing.assert_close(
        net.layer2[0].downsample.conv.weight,
        sd['layer2.0.downsample.0.weight'],
        rtol=0,
        atol=0)


def test_a_tensor_of_another_shape_leaves_its_block_out(tmp_path):
    """A block is loaded completely or not at all, with a warning naming
    the tensor; the other blocks load."""
    sd = torchvision_resnet18_state_dict()
    sd['layer1.0.bn2.bias'] = torch.zeros(65)
    path = tmp_path / 'resnet18.pth'
    torch.save(sd, path)
    net = _net()
    before = net.layer1[0].conv1.conv.weight.detach().clone()
    logger = RecordingLogger()
    loaded, not_loaded = net.load_imagenet_weights(str(path), logger)
    assert 'layer1.0' not in loaded and 'layer1.0' in not_loaded
    assert loaded == [
        'stem', 'layer1.1', 'layer2.0', 'layer3.0', 'layer3.1', 'layer4.0'
    ]
    warnings = [msg for level, msg in logger.lines if level == 'warning']
    assert len(warnings) == 1
    assert warnings[0].startswith(f'RSANet: layer1.0 is not loaded from '
                                  f'{path}; missing or mis-shaped tensors: '
                                  f"['layer1.0.bn2.bias']")
    # nothing of the block was copied, not even its well-shaped tensors
    assert torch.equal(net.layer1[0].conv1.conv.weight, before)
    # init_weights then treats it as a block not loaded: zero last-BN gamma
    net = _net(pretrained=str(path))
    net.init_weights()
    assert (net.layer1[0].last_norm.weight == 0).all()
    torch.testing.assert_close(
        net.layer4[0].conv1.conv.weight,
        sd['layer4.0.conv1.weight'],
        rtol=0,
        atol=0)
