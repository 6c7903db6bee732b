# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.converters.official on checkpoints made in tmp_path.

The fake official checkpoints are written from an mmrsa model through an
inverse of the documented map (written out here, not taken from the
converter), with random values and the official shapes (Conv3d weights with
(1, k, k) kernels, ``P1`` / ``I`` with a leading 1, a Conv1d classifier,
``module.`` prefixes, no ``P1`` for the basic-only kernel), in the layout of
the authors' ``main.py`` (``epoch``, ``arch``, ``state_dict``,
``best_prec1``), saved in PyTorch's zip format or its legacy one. URLs are
served by an HTTP server on 127.0.0.1 that the test starts and stops.
"""
import functools
import itertools
import math
import os
import socket
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from run_helpers import serve_folder

import mmrsa  # noqa: F401
from mmaction.registry import MODELS
from mmrsa.converters.official import (ConversionError,
                                       convert_official_checkpoint,
                                       convert_state_dict, map_key,
                                       official_forward, official_rsa_forward,
                                       official_rsa_settings)
from mmrsa.fileio.atomic import OverwriteRefusedError
from mmrsa.models.common import RSA, rsa_reference

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / 'configs' / 'recognition' / 'rsanet'
MAIN = CONFIGS / 'rsanet_r50_8x1_ssv1.py'
ABLATION = CONFIGS / 'ablations'
FRAMES, SIZE = 8, 32


def quiet(*_) -> None:
    pass


convert = functools.partial(
    convert_official_checkpoint, verify_size=SIZE, log=quiet)


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
            out[f'new_fc.{param}'] = (
                value[:, :, None] if param == 'weight' else value)
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


def save_official(path: Path,
                  state_dict: dict,
                  legacy: bool = False,
                  **extra) -> Path:
    """What the authors' ``main.py`` saves (``torch.save`` of PyTorch 1.6:
    zip; ``legacy=True``: the format before it)."""
    checkpoint = dict(
        epoch=50, arch='ResNet', state_dict=state_dict, best_prec1=51.9)
    checkpoint.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    return path


def sgd_state(state_dict: dict) -> dict:
    """An SGD ``optimizer.state_dict()`` for the parameters: what TSN-style
    training scripts add to their checkpoints."""
    weights = [k for k in state_dict if k.endswith('weight')][:3]
    return dict(
        state={
            i: dict(momentum_buffer=torch.zeros_like(state_dict[k]))
            for i, k in enumerate(weights)
        },
        param_groups=[
            dict(
                lr=0.02,
                momentum=0.9,
                dampening=0,
                weight_decay=5e-4,
                nesterov=True,
                params=list(range(len(weights))))
        ])


def clip(seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, FRAMES, 3, SIZE, SIZE, generator=gen)


def strip(official: dict) -> dict:
    return {k[len('module.'):]: v for k, v in official.items()}


@pytest.fixture(scope='module')
def main_official(tmp_path_factory):
    """(path, official state dict without ``module.``) for the main
    config."""
    official = to_official(build(MAIN))
    path = save_official(
        tmp_path_factory.mktemp('official') / 'rsa.pth.tar', official)
    return path, strip(official)


def assert_same_logits(dst: Path,
                       official: dict,
                       config: Path = MAIN,
                       tol: float = 1e-4) -> torch.nn.Module:
    """``dst`` loads strictly into ``config`` and gives the logits of the
    official forward pass on ``official`` (``module.`` dropped) within
    ``tol``."""
    model = build(config)
    load_checkpoint(
        model, str(dst), map_location='cpu', strict=True, logger='silent')
    x = clip()
    with torch.no_grad():
        ours = model(x, mode='tensor', stage='head')
    theirs = official_forward(official, x)
    assert ours.shape == theirs.shape == (1, 174)
    assert theirs.abs().max() > 0.1  # a meaningful comparison
    assert (ours - theirs).abs().max() <= tol
    return model


# --------------------------------------------------------------------- #
# the key map and the official layer
# --------------------------------------------------------------------- #
def test_key_map_places_every_tensor_as_documented():
    sd = {
        'base_model.conv1.weight': torch.zeros(64, 3, 1, 7, 7),
        'base_model.layer2.0.downsample.0.weight':
        torch.zeros(512, 256, 1, 1, 1),
        'base_model.layer2.0.downsample.1.running_var': torch.ones(512),
        'base_model.layer3.3.bn2.weight': torch.ones(256),
        'base_model.layer3.3.conv2.P1': torch.zeros(1, 32, 16),
        'base_model.layer3.3.conv2.H1.weight': torch.zeros(512, 1, 5, 7, 7),
        'new_fc.weight': torch.zeros(174, 2048, 1),
        'base_model.fc1.bias': torch.zeros(174),
    }
    expected = {
        'base_model.conv1.weight':
        ('backbone.conv1.conv.weight', (64, 3, 7, 7)),
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
        'base_model.fc1.bias': ('cls_head.fc_cls.bias', (174, )),
    }
    for key, tensor in sd.items():
        new_key, _ = map_key(key)
        assert new_key == expected[key][0]
    settings = dict(rsa_layers={})
    converted = convert_state_dict(sd, settings)
    for key, (new_key, shape) in expected.items():
        assert tuple(converted[new_key].shape) == shape, key
    # a BN without its step counter gets one, set to 0
    assert converted[
        'backbone.layer2.0.downsample.bn.num_batches_tracked'].item() == 0
    with pytest.raises(ConversionError, match='unknown key'):
        map_key('base_model.layer1.0.conv2.offset.weight')
    with pytest.raises(ConversionError, match='no counterpart'):
        convert_state_dict(
            {'base_model.layer1.0.conv2.offset.weight': torch.zeros(1)},
            settings)
    with pytest.raises(ConversionError, match=r'\(1, k, k\) kernel'):
        convert_state_dict(
            {'base_model.conv1.weight': torch.zeros(64, 3, 3, 7, 7)}, settings)


@pytest.mark.parametrize('kernel_type,context_type',
                         list(itertools.product(('V', 'R', 'VR'), repeat=2)))
def test_official_rsa_forward_equals_the_literal_equation(
        kernel_type, context_type):
    """The independent official RSA equals the literal Eq. 8 with the
    mapped weights (and so does mmrsa's layer, tested elsewhere)."""
    torch.manual_seed(0)
    layer = RSA(
        16,
        16,
        kernel_size=(3, 3, 3),
        num_queries=4,
        kernel_type=kernel_type,
        context_type=context_type).eval()
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
    settings = official_rsa_settings(sd, prefix)
    assert settings['num_queries'] == 4 and settings['latent_dim'] == 4
    assert settings['kernel_type'] == kernel_type
    assert settings['context_type'] == context_type
    x = torch.randn(2, 16, 4, 5, 5)
    expected = rsa_reference(layer, x)
    torch.testing.assert_close(
        official_rsa_forward(x, sd, prefix, settings, stride=1),
        expected,
        rtol=1e-4,
        atol=1e-5)


def test_oracle_is_independent_of_the_production_layer(main_official,
                                                       monkeypatch):
    """The oracle's RSA is the literal reference: it imports nothing of
    ``mmrsa/models/common/rsa.py`` and gives the same logits with every
    piece of the production layer broken."""
    import ast
    import sys

    from mmrsa.converters.official import oracle
    tree = ast.parse(Path(oracle.__file__).read_text())
    imported = {
        node.module
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {
        alias.name
        for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported == {
        'typing', 'torch', 'torch.nn.functional',
        'models.common.rsa_reference', 'settings'
    }
    _, official = main_official
    x = clip()
    expected = official_forward(official, x)

    def broken(*args, **kwargs):
        raise AssertionError('the oracle ran the production layer')

    rsa_module = sys.modules['mmrsa.models.common.rsa']
    for name in ('forward', 'attend', 'check_input', 'embed',
                 'split_embedding', 'h1_weight', 'downsample'):
        monkeypatch.setattr(RSA, name, broken)
    for name in ('l2_normalize', 'select_path', 'channel_conv3d',
                 'grouped_channel_conv3d', 'per_position_matmul'):
        monkeypatch.setattr(rsa_module, name, broken)
    torch.testing.assert_close(
        official_forward(official, x), expected, rtol=0, atol=0)
    with pytest.raises(AssertionError, match='production layer'):
        RSA(8, num_queries=2, kernel_size=3)(torch.randn(1, 8, 1, 2, 2))


# --------------------------------------------------------------------- #
# conversion
# --------------------------------------------------------------------- #
def test_converted_checkpoint_loads_strictly_and_gives_the_same_logits(
        main_official, tmp_path):
    src, official = main_official
    dst = tmp_path / 'rsanet.pth'
    result = convert(str(src), str(dst), str(MAIN), verify=True)
    assert result['max_logit_diff'] <= 1e-4
    assert result['cfg_options'] is None  # the config was given

    model = assert_same_logits(dst, official)
    # tensors land where the map says
    sd = model.state_dict()
    torch.testing.assert_close(sd['backbone.layer3.3.conv2.conv.P1'],
                               official['base_model.layer3.3.conv2.P1'][0])
    torch.testing.assert_close(
        sd['backbone.layer1.0.conv2.conv.weight'],
        official['base_model.layer1.0.conv2.weight'][:, :, 0])
    torch.testing.assert_close(
        sd['backbone.layer4.1.conv2.conv.projection.weight'],
        official['base_model.layer4.1.conv2.projection.weight'])
    torch.testing.assert_close(sd['cls_head.fc_cls.weight'],
                               official['new_fc.weight'][:, :, 0])

    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(saved) == {'meta', 'state_dict'}
    meta = saved['meta']
    assert meta['official_epoch'] == 50
    assert meta['official_arch'] == 'ResNet'
    assert meta['official_best_prec1'] == pytest.approx(51.9)
    assert meta['converted_from'] == 'rsa.pth.tar'
    assert meta['config'] == str(MAIN.relative_to(REPO_ROOT))
    assert meta['num_classes'] == 174 and 'source_url' not in meta
    assert all(
        isinstance(v, (str, int, float, bool, list)) for v in meta.values())


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_what_a_2021_checkpoint_holds(main_official, tmp_path, legacy):
    """Both serialisations, ``module.`` prefixes, and the entries besides
    the weights (an SGD ``optimizer`` state too) load with
    ``weights_only=True``, and only the weights are converted."""
    _, official = main_official
    wrapped = {f'module.{k}': v for k, v in official.items()}
    src = save_official(
        tmp_path / 'best.pth.tar',
        wrapped,
        legacy=legacy,
        optimizer=sgd_state(wrapped))
    with open(src, 'rb') as f:
        assert (f.read(2) == b'PK') is not legacy  # zip or not
    torch.load(src, weights_only=True)  # plain data only
    dst = tmp_path / 'rsanet.pth'
    convert(str(src), str(dst), str(MAIN))
    assert_same_logits(dst, official)
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['official_epoch'] == 50


def test_basic_only_kernel_gets_identity_p1_and_verifies(tmp_path):
    config = ABLATION / 'rsanet_r50_8x1_ssv1_1layer_kV-xR.py'
    official = to_official(build(config), seed=3)
    assert 'module.base_model.layer3.3.conv2.P1' not in official
    assert 'module.base_model.layer3.3.conv2.G.weight' in official
    src = save_official(tmp_path / 'kv_xr.pth.tar', official)
    dst = tmp_path / 'kv_xr.pth'
    result = convert(str(src), str(dst), str(config), verify=True)
    assert result['max_logit_diff'] < 1e-4
    state = torch.load(dst, weights_only=True)['state_dict']
    torch.testing.assert_close(state['backbone.layer3.3.conv2.conv.P1'],
                               torch.eye(32))


def test_without_config_settings_are_read_from_the_shapes(tmp_path):
    config = ABLATION / 'rsanet_r50_8x1_ssv1_D-16.py'
    official = to_official(build(config), seed=4)
    # an old checkpoint without BN step counters
    official = {
        k: v
        for k, v in official.items() if not k.endswith('num_batches_tracked')
    }
    src = save_official(tmp_path / 'd16.pth.tar', official)
    dst = tmp_path / 'd16.pth'
    lines = []
    result = convert_official_checkpoint(str(src), str(dst), log=lines.append)
    rsa_cfg = result['cfg_options']['model.backbone.rsa_cfg']
    assert rsa_cfg['latent_dim'] == 16 and rsa_cfg['num_queries'] == 8
    assert any("'latent_dim': 16" in line for line in lines)
    model = build(config)
    load_checkpoint(
        model, str(dst), map_location='cpu', strict=True, logger='silent')
    assert model.backbone.conv1.bn.num_batches_tracked.item() == 0


def test_refuses_rsa_settings_that_differ_from_the_config(
        main_official, tmp_path):
    src, _ = main_official
    dst = tmp_path / 'out.pth'
    for name, message in (('D-16', 'latent_dim'),
                          ('2layers', 'RSA layers in the checkpoint'),
                          ('G-4', 'corr_groups')):  # no official counterpart
        config = ABLATION / f'rsanet_r50_8x1_ssv1_{name}.py'
        with pytest.raises(ConversionError, match='does not match') as info:
            convert(str(src), str(dst), str(config))
        assert message in str(info.value)
    assert not dst.exists()


def test_refuses_files_that_are_not_official_checkpoints(tmp_path):
    ours = tmp_path / 'mmrsa.pth'
    torch.save({'state_dict': {
        'backbone.conv1.conv.weight': torch.ones(1)
    }}, ours)
    text = tmp_path / 'notes.txt'
    text.write_text('not a checkpoint')
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    no_tensors = tmp_path / 'no_tensors.pth'
    torch.save({'state_dict': {
        'module.base_model.layer1.0.x': 'text'
    }}, no_tensors)
    lfs = tmp_path / 'resnet_rgb_model_best.pth.tar'
    lfs.write_text('version https://git-lfs.github.com/spec/v1\n'
                   'oid sha256:0123\nsize 90000000\n')
    dst = tmp_path / 'out.pth'
    for src, message in ((ours, "not a checkpoint of the authors'"),
                         (text, 'not a PyTorch checkpoint'),
                         (empty, 'is empty'), (no_tensors, 'not tensors'),
                         (lfs, 'Git LFS pointer'), (tmp_path / 'missing.pth',
                                                    'no such file')):
        with pytest.raises(ConversionError, match=message):
            convert(str(src), str(dst))
    assert not dst.exists()


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def test_refuses_unsafe_pickles_without_running_them(main_official, tmp_path):
    _, official = main_official
    marker = tmp_path / 'payload_ran'
    src = save_official(
        tmp_path / 'payload.pth.tar', {
            f'module.{k}': v
            for k, v in official.items()
        },
        extra=_Payload(str(marker)))
    with pytest.raises(ConversionError) as info:
        convert(str(src), str(tmp_path / 'out.pth'))
    assert 'os.makedirs' in str(info.value)
    assert '--trust-pickle' in str(info.value)
    assert not marker.exists()


def test_trust_pickle_admits_other_objects(main_official, tmp_path):
    """A benign object that a safe load does not know needs the opt-in; its
    number still reaches the metadata as a float."""
    _, official = main_official
    src = save_official(
        tmp_path / 'fraction.pth.tar', {
            f'module.{k}': v
            for k, v in official.items()
        },
        best_prec1=Fraction(519, 10))
    dst = tmp_path / 'out.pth'
    with pytest.raises(ConversionError, match='fractions.Fraction') as info:
        convert(str(src), str(dst), str(MAIN))
    assert '--trust-pickle' in str(info.value)
    convert(str(src), str(dst), str(MAIN), trust_pickle=True)
    meta = torch.load(dst, weights_only=True)['meta']
    assert meta['official_best_prec1'] == pytest.approx(51.9)
    assert type(meta['official_best_prec1']) is float
    with pytest.raises(ConversionError, match='local files only'):
        convert(
            'http://127.0.0.1:9/x.pth',
            str(tmp_path / 'url.pth'),
            trust_pickle=True)


def test_number_metadata_becomes_python_numbers(main_official, tmp_path):
    _, official = main_official
    src = save_official(
        tmp_path / 'numbers.pth.tar', {
            f'module.{k}': v
            for k, v in official.items()
        },
        epoch=np.int64(50),
        best_prec1=torch.tensor([51.9]))
    dst = tmp_path / 'out.pth'
    convert(str(src), str(dst), str(MAIN))
    meta = torch.load(dst, weights_only=True)['meta']
    assert type(meta['official_epoch']) is int
    assert meta['official_epoch'] == 50
    assert type(meta['official_best_prec1']) is float
    assert meta['official_best_prec1'] == pytest.approx(51.9)


def test_refuses_to_overwrite_unless_asked(main_official, tmp_path):
    src, _ = main_official
    dst = tmp_path / 'exists.pth'
    dst.write_bytes(b'keep me')
    # the one overwrite rule (mmrsa.fileio.atomic.refuse_existing)
    with pytest.raises(
            OverwriteRefusedError, match='already exists; pass --force'):
        convert(str(src), str(dst), str(MAIN))
    assert dst.read_bytes() == b'keep me'
    convert(str(src), str(dst), str(MAIN), overwrite=True)
    assert set(torch.load(dst, weights_only=True)) == {'meta', 'state_dict'}


# --------------------------------------------------------------------- #
# URLs
# --------------------------------------------------------------------- #
@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """(folder, base URL): files in the folder served on 127.0.0.1 until
    the test ends; the torch hub cache in tmp_path."""
    root = tmp_path / 'served'
    root.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    for name in ('NO_PROXY', 'no_proxy'):  # never through a proxy
        monkeypatch.setenv(name, '127.0.0.1,localhost')
    with serve_folder(root) as base:
        yield root, base


def test_url_is_downloaded_to_the_hub_cache_and_converted(
        main_official, http_root, tmp_path):
    """Two runs' files of the same name, one zip and one legacy, as the
    authors' repository serves them; each is downloaded once into its own
    folder of the hub cache, converted and verified."""
    _, official = main_official
    root, base = http_root
    wrapped = {f'module.{k}': v for k, v in official.items()}
    name = 'resnet_rgb_model_best.pth.tar'
    hub = Path(torch.hub.get_dir()) / 'checkpoints'
    assert str(hub).startswith(str(tmp_path))
    digests = set()
    for run, legacy in (('RSA_ZIP_16frames', False), ('RSA_LEGACY_16frames',
                                                      True)):
        src = save_official(
            root / 'net_runs' / run / name,
            wrapped,
            legacy=legacy,
            optimizer=sgd_state(wrapped))
        url = f'{base}/net_runs/{run}/{name}'
        dst = tmp_path / f'{run}.pth'
        result = convert(url, str(dst), str(MAIN), verify=True, progress=False)
        cached = hub / run / name
        assert cached.read_bytes() == src.read_bytes()
        assert result['max_logit_diff'] <= 1e-4
        assert_same_logits(dst, official)
        meta = torch.load(dst, weights_only=True)['meta']
        assert meta['source_url'] == url and meta['converted_from'] == name
        digests.add(meta['source_sha256'])
    assert len(digests) == 2  # the second did not reuse the first's file


def test_cached_download_is_used_offline(main_official, http_root, tmp_path):
    _, official = main_official
    root, base = http_root
    src = save_official(root / 'run' / 'best.pth.tar', {
        f'module.{k}': v
        for k, v in official.items()
    })
    url = f'{base}/run/best.pth.tar'
    convert(url, str(tmp_path / 'a.pth'), str(MAIN), progress=False)
    src.unlink()  # the server has it no more: the cache is used
    convert(url, str(tmp_path / 'b.pth'), str(MAIN), progress=False)
    assert_same_logits(tmp_path / 'b.pth', official)


def test_failed_download_says_how_to_work_offline(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    for name in ('NO_PROXY', 'no_proxy'):
        monkeypatch.setenv(name, '127.0.0.1,localhost')
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    url = f'http://127.0.0.1:{port}/RSA_R50_SSV1_16frames/best.pth.tar'
    with pytest.raises(ConversionError) as info:
        convert(url, str(tmp_path / 'out.pth'), progress=False)
    message = str(info.value)
    assert 'cannot download' in message and 'local path' in message
    assert str(
        Path(torch.hub.get_dir()) / 'checkpoints' / 'RSA_R50_SSV1_16frames' /
        'best.pth.tar') in message
