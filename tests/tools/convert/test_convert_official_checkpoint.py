# Copyright (c) mmrsa contributors. All rights reserved.
"""tools/convert/convert_official_checkpoint.py, run as a command.

The official-format checkpoint is an mmrsa model's state dict renamed by the
documented map read backwards (a rename table written here), so a
conversion must give back the model's tensors exactly. The URL is served by
an HTTP server on 127.0.0.1 that the test starts and stops.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from run_helpers import serve_folder

import mmrsa  # noqa: F401
from mmaction.registry import MODELS

REPO_ROOT = Path(__file__).resolve().parents[3]
TOOL = REPO_ROOT / 'tools' / 'convert' / 'convert_official_checkpoint.py'
MAIN = REPO_ROOT / 'configs' / 'recognition' / 'rsanet' / \
    'rsanet_r50_8x1_ssv1.py'

#: mmrsa key -> official key (``module.`` added after), and how the tensor
#: changes: 'conv' adds the unit time axis of a Conv3d / Conv1d weight,
#: 'lead' the leading 1 of P1 / I.
TO_OFFICIAL = (
    (r'backbone\.conv1\.conv\.weight', r'base_model.conv1.weight', 'conv'),
    (r'backbone\.conv1\.bn\.(\w+)', r'base_model.bn1.\1', ''),
    (r'backbone\.(layer\d\.\d+)\.conv2\.conv\.(P1|I)',
     r'base_model.\1.conv2.\2', 'lead'),
    (r'backbone\.(layer\d\.\d+)\.conv2\.conv\.(\w+)\.weight',
     r'base_model.\1.conv2.\2.weight', ''),
    (r'backbone\.(layer\d\.\d+)\.conv(\d)\.conv\.weight',
     r'base_model.\1.conv\2.weight', 'conv'),
    (r'backbone\.(layer\d\.\d+)\.conv(\d)\.bn\.(\w+)',
     r'base_model.\1.bn\2.\3', ''),
    (r'backbone\.(layer\d\.\d+)\.downsample\.conv\.weight',
     r'base_model.\1.downsample.0.weight', 'conv'),
    (r'backbone\.(layer\d\.\d+)\.downsample\.bn\.(\w+)',
     r'base_model.\1.downsample.1.\2', ''),
    (r'cls_head\.fc_cls\.weight', 'new_fc.weight', 'conv'),
    (r'cls_head\.fc_cls\.bias', 'new_fc.bias', ''),
)


def official_from(state_dict: dict) -> dict:
    out = {}
    for key, value in state_dict.items():
        for pattern, template, change in TO_OFFICIAL:
            match = re.fullmatch(pattern, key)
            if match:
                break
        else:
            raise AssertionError(f'no rule for {key}')
        if change == 'conv':
            value = value[:, :, None]
        elif change == 'lead':
            value = value[None]
        out['module.' + match.expand(template)] = value
    return out


@pytest.fixture(scope='module')
def model_state():
    cfg = Config.fromfile(str(MAIN))
    cfg.model.backbone.pretrained = None
    init_default_scope('mmaction')
    model = MODELS.build(cfg.model)
    torch.manual_seed(0)
    with torch.no_grad():  # BN statistics that are not the defaults
        for name, buf in model.named_buffers():
            if name.endswith('running_var'):
                buf.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args],
                          cwd=REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)


@pytest.fixture
def served(tmp_path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 for this test."""
    root = tmp_path / 'served'
    root.mkdir()
    with serve_folder(root) as base:
        yield root, base


def test_help_names_url_and_options():
    result = run('--help')
    assert result.returncode == 0
    for option in ('--config', '--verify', '--trust-pickle', '--force',
                   'http(s) URL'):
        assert option in result.stdout


def test_url_to_mmrsa_checkpoint(model_state, served, tmp_path):
    root, base = served
    run_dir = root / 'net_runs' / 'RSA_R50_SSV1_16frames'
    run_dir.mkdir(parents=True)
    torch.save(
        dict(
            epoch=50,
            arch='ResNet',
            best_prec1=51.9,
            state_dict=official_from(model_state)),
        run_dir / 'resnet_rgb_model_best.pth.tar',
        _use_new_zipfile_serialization=False)
    url = (f'{base}/net_runs/RSA_R50_SSV1_16frames/'
           'resnet_rgb_model_best.pth.tar')
    env = dict(
        os.environ,
        TORCH_HOME=str(tmp_path / 'torch_home'),
        NO_PROXY='127.0.0.1,localhost',
        no_proxy='127.0.0.1,localhost')
    dst = tmp_path / 'rsanet.pth'
    result = run(
        url,
        str(dst),
        '--config',
        str(MAIN),
        '--verify',
        '--verify-size',
        '32',
        env=env)
    assert result.returncode == 0, result.stderr
    assert 'verify: max |logit difference|' in result.stdout
    assert 'with no missing or unexpected keys' in result.stdout
    # the download's progress bar (torch.hub's, with or without tqdm)
    assert re.search(r'100(\.0)?%', result.stderr)
    cached = (
        tmp_path / 'torch_home' / 'hub' / 'checkpoints' /
        'RSA_R50_SSV1_16frames' / 'resnet_rgb_model_best.pth.tar')
    assert cached.is_file()
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['source_url'] == url
    # the map read backwards and forwards gives the model's tensors back
    assert converted['state_dict'].keys() == model_state.keys()
    for key, value in model_state.items():
        assert torch.equal(converted['state_dict'][key], value), key

    # an existing output is kept unless --force
    dst.write_bytes(b'keep me')
    result = run(url, str(dst), '--config', str(MAIN), env=env)
    assert result.returncode == 1
    assert 'already exists; pass --force' in result.stderr
    assert dst.read_bytes() == b'keep me'


class _Payload:

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker, ))


def test_unsafe_file_exits_1_without_running_it(tmp_path):
    marker = tmp_path / 'payload_ran'
    src = tmp_path / 'payload.pth.tar'
    torch.save({'state_dict': {}, 'extra': _Payload(str(marker))}, src)
    result = run(str(src), str(tmp_path / 'out.pth'))
    assert result.returncode == 1
    assert 'error: ' in result.stderr
    assert 'os.makedirs' in result.stderr
    assert '--trust-pickle' in result.stderr
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()
