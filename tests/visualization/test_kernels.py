# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.visualization.kernels: the kernels it draws, and the drawing."""
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmrsa  # noqa: F401
from mmrsa.datasets.synthmotion import SYNTHMOTION_CLASSES, render_clip
from mmrsa.models.common import RSA, unfold_context
from mmrsa.visualization import kernels as tool

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / 'configs' / 'recognition' / 'rsanet' / \
    'rsanet_r18_8x1_synthmotion.py'
MOVING_UP = SYNTHMOTION_CLASSES.index('Moving something up')


@pytest.mark.parametrize(
    'kernel_type,context_type,corr_groups',
    [(k, c, None)
     for k, c in itertools.product(('V', 'R', 'VR'), ('V', 'R', 'VR'))] +
    [('VR', 'VR', 2)])
def test_kernels_rebuild_the_layer_output(kernel_type, context_type,
                                          corr_groups):
    """(kV + kR) applied to the context at n gives the layer's output at n,
    so the drawn kernels are the ones the layer uses."""
    torch.manual_seed(0)
    layer = RSA(
        16,
        16,
        kernel_size=(3, 3, 3),
        num_queries=4,
        kernel_type=kernel_type,
        context_type=context_type,
        corr_groups=corr_groups).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = torch.randn(1, 16, 4, 5, 6)
    with torch.no_grad():
        out = layer(x)  # [1, Cq * L, T, H, W], channel c * L + l
        _, _, v = layer.embed(x)
        values = unfold_context(v, layer.kernel_size, layer.padding)
    cq, nq = layer.query_channels, layer.num_queries
    for position in [(1, 2, 3), (0, 0, 5), (3, 4, 0)]:  # inside and edges
        kernels = tool.rsa_kernels(layer, x, position)
        assert (kernels['basic'] is None) != ('V' in kernel_type)
        assert (kernels['relational'] is None) != ('R' in kernel_type)
        kernel = sum(k for k in kernels.values() if k is not None)
        kernel = kernel.reshape(nq, -1)  # [L, M]
        t, h, w = position
        xv = values[0, (t * 5 + h) * 6 + w]  # [M, Cq]
        context = 0
        if 'V' in context_type:
            context = context + (xv @ layer.I if layer.I is not None else xv)
        if 'R' in context_type:
            g = layer.G.weight.reshape(cq, -1).t()  # [M, Cq]
            context = context + xv @ xv.t() @ g
        expected = (kernel @ context).t().reshape(-1)  # [Cq * L]
        torch.testing.assert_close(
            out[0, :, t, h, w], expected, rtol=1e-4, atol=1e-5)


def test_query_outside_the_map_raises():
    layer = RSA(8, 8, kernel_size=(3, 3, 3), num_queries=2)
    with pytest.raises(ValueError, match='outside'):
        tool.rsa_kernels(layer, torch.randn(1, 8, 2, 3, 3), (2, 0, 0))


@pytest.mark.parametrize('num_frames', [5, 8, 16, 37])
def test_frames_are_those_the_test_pipeline_samples(num_frames):
    from mmaction.datasets.transforms import SampleFrames
    sampler = SampleFrames(
        clip_len=1, frame_interval=1, num_clips=8, test_mode=True)
    expected = sampler(dict(total_frames=num_frames, start_index=0))
    assert tool.sample_indices(num_frames, 8) == list(expected['frame_inds'])


def write_rawframes(folder: Path, frames: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        cv2.imwrite(
            str(folder / f'{i + 1:05d}.jpg'),
            cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture(scope='module')
def moving_up(tmp_path_factory):
    frames = render_clip(
        MOVING_UP, np.random.default_rng(3), size=64, num_frames=16)
    return write_rawframes(tmp_path_factory.mktemp('clip') / 'up', frames)


@pytest.fixture(scope='module')
def drawn(tmp_path_factory, moving_up):
    """One run on a training-style checkpoint of random weights."""
    from mmengine.config import Config
    tmp = tmp_path_factory.mktemp('vis')
    cfg = Config.fromfile(str(CONFIG))
    model = tool.build_model(cfg, 'none')
    history = HistoryBuffer()
    history.update(1.)
    checkpoint = tmp / 'epoch_1.pth'  # as MMEngine saves it
    torch.save(
        dict(
            meta=dict(epoch=1),
            state_dict=model.state_dict(),
            message_hub=dict(log_scalars={'loss': history})), checkpoint)
    out = tmp / 'out'
    result = tool.visualize(
        str(CONFIG), str(checkpoint), str(moving_up), str(out))
    return result, out


def test_writes_the_pictures_and_the_kernels(drawn):
    import matplotlib.image as mpimg
    result, out = drawn
    names = {Path(f).name for f in result['files']}
    assert names == {
        f'{kind}{suffix}.png'
        for kind in ('frames', 'kernels', 'figure')
        for suffix in ('', '_reversed')
    } | {'kernels.npz'}
    for name in names - {'kernels.npz'}:
        image = mpimg.imread(out / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100
    arrays = np.load(out / 'kernels.npz')
    # the first RSA layer of the config: L = 8, M = 5x3x3
    assert result['layer'] == 'layer1.1'
    for name in ('basic', 'relational', 'basic_reversed',
                 'relational_reversed'):
        assert arrays[name].shape == (8, 5, 3, 3)
    t, h, w = result['position']
    assert tuple(arrays['reversed_position']) == (8 - 1 - t, h, w)


def test_basic_kernel_ignores_time_reversal_relational_does_not(drawn):
    """At the first RSA layer the query sees only its own frame."""
    result, _ = drawn
    assert result['basic_change'] < 1e-5
    assert result['relational_change'] > 1e-2


def test_default_query_is_on_the_moving_object(drawn, moving_up):
    result, _ = drawn
    t, h, w = result['position']
    assert t == 4
    frames = tool.read_frames(str(moving_up))
    assert len(frames) == 16 and frames[0].shape == (64, 64, 3)
    # the sampled frames around t differ at the query cell (7x7 map)
    clip = np.stack([frames[i] for i in tool.sample_indices(16, 8)])
    # Resize 64 -> 36, CenterCrop 32; layer1 maps are 8x8 (4-pixel cells)
    clip = np.stack([cv2.resize(f, (36, 36)) for f in clip])
    crop = clip[:, 2:34, 2:34].astype(float)
    diff = np.abs(crop[t + 1] - crop[t - 1]).sum(-1)
    cell = diff[h * 4:(h + 1) * 4, w * 4:(w + 1) * 4].mean()
    assert cell >= diff.mean()


def test_errors_name_what_is_wrong(tmp_path, moving_up):
    out = str(tmp_path / 'out')
    args = (str(CONFIG), 'none', str(moving_up), out)
    with pytest.raises(ValueError) as info:
        tool.visualize(*args, layer_name='layer1.0')
    assert ("RSA layers are in ['layer1.1', 'layer2.1', 'layer3.1', "
            "'layer4.1']") in str(info.value)
    with pytest.raises(ValueError, match='L = 8'):
        tool.visualize(*args, queries=[8])
    official = tmp_path / 'official.pth.tar'
    torch.save(
        {'state_dict': {
            'module.base_model.conv1.weight': torch.ones(1)
        }}, official)
    with pytest.raises(ValueError, match='convert_official_checkpoint'):
        tool.visualize(str(CONFIG), str(official), str(moving_up), out)
    with pytest.raises(ValueError, match='no such file'):
        tool.visualize(str(CONFIG), 'none', str(tmp_path / 'nothing'), out)


def test_out_dir_refusals_are_overwrite_refusals(tmp_path):
    """The refusals are the one overwrite error of mmrsa.fileio.atomic."""
    from mmrsa.fileio.atomic import OverwriteRefusedError
    (tmp_path / 'figure.png').write_bytes(b'an earlier run')
    with pytest.raises(
            OverwriteRefusedError, match='already holds figure.png'):
        tool.check_out_dir(str(tmp_path))
    tool.check_out_dir(str(tmp_path), force=True)
    (tmp_path / 'kernels.npz').mkdir()
    with pytest.raises(OverwriteRefusedError, match='never replaced'):
        tool.check_out_dir(str(tmp_path), force=True)
    a_file = tmp_path / 'notes.txt'
    a_file.write_text('')
    with pytest.raises(OverwriteRefusedError, match='is a file'):
        tool.check_out_dir(str(a_file))
