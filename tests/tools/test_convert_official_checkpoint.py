# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/convert_official_checkpoint.py on checkpoints made in tmp_path.

The fake official checkpoints are written from an mmrsa model through an
inverse of the documented map (written out here, not taken from the tool),
with random values and the official shapes (Conv3d weights with (1, k, k)
kernels, ``P1`` / ``I`` with a leading 1, a Conv1d classifier, ``module.``
prefixes, no ``P1`` for the basic-only kernel).
"""
import importlib.util
import itertools
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

import mmrsa  # noqa: F401
from mmaction.registry import MODELS
from mmrsa.models.common import RSA, rsa_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
MAIN = CONFIGS / 'rsanet_r50_8x1_ssv1.py'
ABLATION = CONFIGS / 'ablations'
FRAMES, SIZE = 8, 32


def _load_tool():
    path = REPO_ROOT / 'tools' / 'convert_official_checkpoint.py'
    spec = importlib.util.spec_from_file_location('convert_official_tool',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(autouse=True, scope='module')
def few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(config: Path):
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.pretrained = None
    init_default_scope('mmaction')
    return MODELS.build(cfg.model).eval()


def random_like(key: str, tensor: torch.Tensor,
                gen: torch.Generator) -> torch.Tensor:
    """Random values that keep a 16-block ResNet's activations tame."""
    if key.endswith('num_batches_tracked'):
        return torch.tensor(1234)
    if key.endswith('running_var'):
        return torch.rand(tensor.shape, generator=gen) + 0.5
    if key.endswith(('running_mean', '.bias')):
        return 0.1 * torch.randn(tensor.shape, generator=gen)
    if key.endswith('bn.weight'):
        return 0.5 * torch.rand(tensor.shape, generator=gen) + 0.5
    if key.endswith('.I'):
        return torch.eye(tensor.shape[0]) + 0.1 * torch.randn(
            tensor.shape, generator=gen)
    fan_in = max(1, tensor[0].numel()) if tensor.dim() > 1 else 1
    return torch.randn(tensor.shape, generator=gen) / math.sqrt(fan_in)


def to_official(model, seed: int = 0) -> dict:
    """An official-layout state dict with random values for ``model``."""
    gen = torch.Generator().manual_seed(seed)
    basic_only = {
        name[:-len('.conv')]
        for name, m in model.backbone.named_modules()
        if isinstance(m, RSA) and m.kernel_type == 'V'
    }
    out = {}
    for key, tensor in model.state_dict().items():
        value = random_like(key, tensor, gen)
        if key.startswith('cls_head.fc_cls.'):
            param = key.rsplit('.', 1)[1]
            out[f'new_fc.{param}'] = (value[:, :, None]
                                      if param == 'weight' else value)
            continue
        name = key[len('backbone.'):]
        parts = name.split('.')
        if parts[0] == 'conv1':  # stem
            if parts[1] == 'conv':
                out['base_model.conv1.weight'] = value[:, :, None]
            else:
                out[f'base_model.bn1.{parts[2]}'] = value
            continue
        block, rest = '.'.join(parts[:2]), parts[2:]
        prefix = f'base_model.{block}.'
        if rest[0] == 'downsample':
            if rest[1] == 'conv':
                out[prefix + 'downsample.0.weight'] = value[:, :, None]
            else:
                out[prefix + f'downsample.1.{rest[2]}'] = value
        elif rest[1] == 'bn':  # convK.bn.x -> bnK.x
            out[prefix + f'bn{rest[0][-1]}.{rest[2]}'] = value
        elif rest[2] == 'weight':  # convK.conv.weight, a 2D convolution
            out[prefix + f'{rest[0]}.weight'] = value[:, :, None]
        elif rest[2] in ('P1', 'I'):  # RSA matrices get a leading 1
            if rest[2] == 'P1' and f'{block}.conv2' in basic_only:
                continue  # the official basic-only kernel has no P1
            out[prefix + f'conv2.{rest[2]}'] = value[None]
        else:  # conv2.conv.{projection,H1,H2,G}.weight: same layout
            out[prefix + 'conv2.' + '.'.join(rest[2:])] = value
    return {f'module.{k}': v for k, v in out.items()}


def save_official(path: Path, state_dict: dict, **extra) -> Path:
    checkpoint = dict(epoch=50, arch='ResNet', state_dict=state_dict,
                      best_prec1=51.9)
    checkpoint.update(extra)
    torch.save(checkpoint, path)
    return path


def clip(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=gen)


@pytest.fixture(scope='module')
def main_official(tmp_path_factory):
    """(path, official state dict without ``module.``) for the main
    config."""
    official = to_official(build(MAIN))
    path = save_official(tmp_path_factory.mktemp('official') / 'rsa.pth.tar',
                         official)
    return path, {k[len('module.'):]: v for k, v in official.items()}


# --------------------------------------------------------------------- #
def test_key_map_places_every_tensor_as_documented():
    sd = {
        'base_model.conv1.weight': torch.zeros(64, 3, 1, 7, 7),
        'base_model.layer2.0.downsample.0.weight': torch.zeros(
            512, 256, 1, 1, 1),
        'base_model.layer2.0.downsample.1.running_var': torch.ones(512),
        'base_model.layer3.3.bn2.weight': torch.ones(256),
        'base_model.layer3.3.conv2.P1': torch.zeros(1, 32, 16),
        'base_model.layer3.3.conv2.H1.weight': torch.zeros(
            512, 1, 5, 7, 7),
        'new_fc.weight': torch.zeros(174, 2048, 1),
    }
    expected = {
        'base_model.conv1.weight': ('backbone.conv1.conv.weight',
                                    (64, 3, 7, 7)),
        'base_model.layer2.0.downsample.0.weight':
        ('backbone.layer2.0.downsample.conv.weight', (512, 256, 1, 1)),
        'base_model.layer2.0.downsample.1.running_var':
        ('backbone.layer2.0.downsample.bn.running_var', (512, )),
        'base_model.layer3.3.bn2.weight': ('backbone.layer3.3.conv2.bn.weight',
                                           (256, )),
        'base_model.layer3.3.conv2.P1': ('backbone.layer3.3.conv2.conv.P1',
                                         (32, 16)),
        'base_model.layer3.3.conv2.H1.weight':
        ('backbone.layer3.3.conv2.conv.H1.weight', (512, 1, 5, 7, 7)),
        'new_fc.weight': ('cls_head.fc_cls.weight', (174, 2048)),
    }
    for key, tensor in sd.items():
        new_key, layout = tool.map_key(key)
        assert new_key == expected[key][0]
        converted = tool._convert_tensor(key, tensor, layout)
        assert tuple(converted.shape) == expected[key][1]
    with pytest.raises(tool.ConversionError, match='unknown key'):
        tool.map_key('base_model.layer1.0.conv2.offset.weight')


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(('V', 'R', 'VR'), repeat=2)))
def test_official_rsa_forward_equals_the_literal_equation(
        kernel_type, context_type):
    """The tool's independent official RSA equals the literal Eq. 8 with the
    mapped weights (and so does mmrsa's layer, tested elsewhere)."""
    torch.manual_seed(0)
    layer = RSA(16, 16, kernel_size=(3, 3, 3), num_queries=4,
                kernel_type=kernel_type, context_type=context_type).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
        if layer.P1 is not None and kernel_type == 'V':
            layer.P1.copy_(torch.eye(layer.query_channels))
    prefix = 'base_model.layer1.1.conv2.'
    sd = {prefix.replace('conv2.', 'bn2.') + 'weight': torch.ones(16)}
    for name, tensor in layer.state_dict().items():
        if name == 'P1' and kernel_type == 'V':
            continue
        sd[prefix + name] = tensor[None] if name in ('P1', 'I') else tensor
    settings = tool.official_rsa_settings(sd, prefix)
    assert settings['num_queries'] == 4 and settings['latent_dim'] == 4
    assert settings['kernel_type'] == kernel_type
    assert settings['context_type'] == context_type
    x = torch.randn(2, 16, 4, 5, 5)
    expected = rsa_reference(layer, x)
    torch.testing.assert_close(
        tool.official_rsa_forward(x, sd, prefix, settings, stride=1),
        expected, rtol=1e-4, atol=1e-5)


def test_converted_checkpoint_loads_strictly_and_gives_the_same_logits(
        main_official, tmp_path):
    src, official = main_official
    dst = tmp_path / 'rsanet.pth'
    assert tool.main([str(src), str(dst), '--config', str(MAIN)]) == 0

    model = build(MAIN)
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    # tensors land where the docstring says
    sd = model.state_dict()
    torch.testing.assert_close(
        sd['backbone.layer3.3.conv2.conv.P1'],
        official['base_model.layer3.3.conv2.P1'][0])
    torch.testing.assert_close(
        sd['backbone.layer1.0.conv2.conv.weight'],
        official['base_model.layer1.0.conv2.weight'][:, :, 0])
    torch.testing.assert_close(
        sd['backbone.layer4.1.conv2.conv.projection.weight'],
        official['base_model.layer4.1.conv2.projection.weight'])
    torch.testing.assert_close(sd['cls_head.fc_cls.weight'],
                               official['new_fc.weight'][:, :, 0])

    x = clip()
    with torch.no_grad():
        ours = model(x, mode='tensor', stage='head')
    theirs = tool.official_forward(official, x)
    assert ours.shape == theirs.shape == (1, 174)
    scale = theirs.abs().max()
    assert scale > 1e-3  # a meaningful comparison
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * scale)

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'meta', 'state_dict'}
    meta = saved['meta']
    assert meta['official_epoch'] == 50
    assert meta['official_best_prec1'] == pytest.approx(51.9)
    assert all(
        isinstance(v, (str, int, float, bool, list)) for v in meta.values())


def test_basic_only_kernel_gets_identity_p1_and_verifies(tmp_path):
    config = ABLATION / 'rsanet_r50_8x1_ssv1_1layer_kV-xR.py'
    official = to_official(build(config), seed=3)
    assert 'module.base_model.layer3.3.conv2.P1' not in official
    assert 'module.base_model.layer3.3.conv2.G.weight' in official
    src = save_official(tmp_path / 'kv_xr.pth.tar', official)
    dst = tmp_path / 'kv_xr.pth'
    result = tool.convert(
        str(src), str(dst), str(config), verify=True, verify_size=SIZE,
        log=lambda *_: None)
    assert result['max_logit_diff'] < 1e-3
    state = torch.load(dst, weights_only=True)['state_dict']
    torch.testing.assert_close(state['backbone.layer3.3.conv2.conv.P1'],
                               torch.eye(32))


def test_without_config_settings_are_read_from_the_shapes(tmp_path, capsys):
    config = ABLATION / 'rsanet_r50_8x1_ssv1_D-16.py'
    official = to_official(build(config), seed=4)
    # an old checkpoint without BN step counters
    official = {
        k: v
        for k, v in official.items() if not k.endswith('num_batches_tracked')
    }
    src = save_official(tmp_path / 'd16.pth.tar', official)
    dst = tmp_path / 'd16.pth'
    assert tool.main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert "'latent_dim': 16" in out and "'num_queries': 8" in out
    model = build(config)
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    assert model.backbone.conv1.bn.num_batches_tracked.item() == 0


def test_refuses_rsa_settings_that_differ_from_the_config(
        main_official, tmp_path, capsys):
    src, _ = main_official
    dst = tmp_path / 'out.pth'
    config = ABLATION / 'rsanet_r50_8x1_ssv1_D-16.py'
    assert tool.main([str(src), str(dst), '--config', str(config)]) == 1
    err = capsys.readouterr().err
    assert 'does not match' in err and 'latent_dim' in err
    assert not dst.exists()
    # places of the RSA layers
    config = ABLATION / 'rsanet_r50_8x1_ssv1_2layers.py'
    assert tool.main([str(src), str(dst), '--config', str(config)]) == 1
    assert 'RSA layers in the checkpoint' in capsys.readouterr().err
    # grouped correlation has no official counterpart
    config = ABLATION / 'rsanet_r50_8x1_ssv1_G-4.py'
    assert tool.main([str(src), str(dst), '--config', str(config)]) == 1
    assert 'corr_groups' in capsys.readouterr().err


def test_refuses_files_that_are_not_official_checkpoints(tmp_path, capsys):
    ours = tmp_path / 'mmrsa.pth'
    torch.save({'state_dict': {'backbone.conv1.conv.weight': torch.ones(1)}},
               ours)
    text = tmp_path / 'notes.txt'
    text.write_text('not a checkpoint')
    no_tensors = tmp_path / 'no_tensors.pth'
    torch.save({'state_dict': {'module.base_model.layer1.0.x': 'text'}},
               no_tensors)
    dst = tmp_path / 'out.pth'
    for src, message in ((ours, "not a checkpoint of the authors'"),
                         (text, 'not a PyTorch checkpoint'),
                         (no_tensors, 'non-tensor'),
                         (tmp_path / 'missing.pth', 'no such file')):
        assert tool.main([str(src), str(dst)]) == 1
        assert message in capsys.readouterr().err
    assert not dst.exists()


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def test_refuses_unsafe_pickles_without_running_them(main_official,
                                                     tmp_path, capsys):
    _, official = main_official
    marker = tmp_path / 'payload_ran'
    src = save_official(
        tmp_path / 'payload.pth.tar',
        {f'module.{k}': v for k, v in official.items()},
        extra=_Payload(str(marker)))
    assert tool.main([str(src), str(tmp_path / 'out.pth')]) == 1
    err = capsys.readouterr().err
    assert 'os.makedirs' in err and '--trust-pickle' in err
    assert not marker.exists()


def test_trust_pickle_admits_other_objects(main_official, tmp_path,
                                           capsys):
    """A benign object that a safe load does not know needs the flag; its
    number still reaches the metadata as a float."""
    _, official = main_official
    src = save_official(
        tmp_path / 'fraction.pth.tar',
        {f'module.{k}': v for k, v in official.items()},
        best_prec1=Fraction(519, 10))
    dst = tmp_path / 'out.pth'
    assert tool.main([str(src), str(dst), '--config', str(MAIN)]) == 1
    err = capsys.readouterr().err
    assert 'fractions.Fraction' in err and '--trust-pickle' in err
    assert tool.main(
        [str(src), str(dst), '--config', str(MAIN), '--trust-pickle']) == 0
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['official_best_prec1'] == pytest.approx(51.9)
    assert type(meta['official_best_prec1']) is float


def test_numpy_metadata_becomes_python_numbers(main_official, tmp_path):
    _, official = main_official
    src = save_official(
        tmp_path / 'numpy.pth.tar',
        {f'module.{k}': v for k, v in official.items()},
        epoch=np.int64(50),
        best_prec1=np.float64(51.9))
    dst = tmp_path / 'out.pth'
    assert tool.main([str(src), str(dst), '--config', str(MAIN),
                      '--trust-pickle']) == 0
    meta = torch.load(dst, weights_only=True)['meta']
    assert type(meta['official_epoch']) is int
    assert type(meta['official_best_prec1']) is float


def test_refuses_to_overwrite_without_force(main_official, tmp_path, capsys):
    src, _ = main_official
    dst = tmp_path / 'exists.pth'
    dst.write_bytes(b'keep me')
    assert tool.main([str(src), str(dst), '--config', str(MAIN)]) == 1
    assert 'already exists; pass --force' in capsys.readouterr().err
    assert dst.read_bytes() == b'keep me'
    assert tool.main([str(src), str(dst), '--config', str(MAIN),
                      '--force']) == 0
    assert dst.read_bytes() != b'keep me'
