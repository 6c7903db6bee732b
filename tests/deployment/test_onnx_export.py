# Copyright (c) mmrsa contributors. All rights reserved.
"""ONNX export of a whole recognizer (mmrsa.deployment.onnx): clip in, raw
class scores out, through both exporters and onnxruntime, plus the
torch.export and torch.jit.trace graphs of the same module."""
import os.path as osp
import warnings

import onnx
import pytest
import torch

import mmrsa  # noqa: F401  (registration)
from mmaction.structures import ActionDataSample
from mmrsa.deployment import (ClipClassifier, build_clip_classifier,
                              check_onnx, default_input_shape, export_onnx)
from mmrsa.deployment.onnx import _metadata
from mmrsa.models.common import RSA

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
DEMO_CONFIG = osp.join(ROOT, 'configs', 'recognition', 'rsanet',
                       'rsanet_r18_8x1_synthmotion.py')
#: RSANet-R18 with two RSA layers, Cq = 8 (CPU position loops) in stage 1
#: and Cq = 32 (CPU bmm) in stage 3, on 4-frame 32x32 clips
SMALL = {
    'model.backbone.rsa_blocks': ((1, ), (), (1, ), ()),
    'model.backbone.num_segments': 4,
}
SHAPE = (1, 4, 3, 32, 32)
TOL = 1e-4


@pytest.fixture(scope='module')
def small():
    torch.manual_seed(0)
    module, cfg = build_clip_classifier(DEMO_CONFIG, cfg_options=SMALL)
    with torch.no_grad():
        # scores of order 1 (the head starts at std 0.01), so that the
        # tolerance below is a strict one
        module.recognizer.cls_head.fc_cls.weight.normal_(0, 1)
    return module, cfg


def _clips(*batches, shape=SHAPE):
    generator = torch.Generator().manual_seed(2)
    return [
        torch.randn((n, ) + tuple(shape[1:]), generator=generator)
        for n in batches
    ]


def test_small_model_has_rsa_layers(small):
    module, _ = small
    assert module.num_segments == 4
    assert sum(isinstance(m, RSA) for m in module.modules()) == 2


def test_scores_are_the_raw_head_output(small):
    """softmax(scores) is MMAction2's prediction (average_clips='prob');
    the frames layout [N*T, C, H, W] gives the same scores."""
    module, _ = small
    (clip, ) = _clips(2)
    with torch.no_grad():
        scores = module(clip)
        frames = module(clip.reshape(-1, *clip.shape[2:]))
        samples = [ActionDataSample() for _ in range(2)]
        predicted = module.recognizer.predict(clip, samples)
    assert scores.shape == (2, 10)
    torch.testing.assert_close(frames, scores)
    probs = torch.stack([p.pred_score for p in predicted])
    torch.testing.assert_close(probs, scores.softmax(dim=1))


def test_default_input_shape():
    _, cfg = build_clip_classifier(DEMO_CONFIG)
    assert default_input_shape(cfg) == (1, 8, 3, 32, 32)


@pytest.mark.parametrize('exporter', ['legacy', 'dynamo'])
def test_onnx_export_matches_eager(small, exporter, tmp_path):
    module, cfg = small
    path = str(tmp_path / f'small_{exporter}.onnx')
    export_onnx(
        module, path, SHAPE, exporter, metadata=_metadata(cfg, module, SHAPE))
    model = onnx.load(path)
    onnx.checker.check_model(model)
    (clip_input, ) = model.graph.input
    batch_dim = clip_input.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['input_layout'] == 'N,T,C,H,W'
    assert meta['num_segments'] == '4'
    assert 'before softmax' in meta['output']
    with torch.no_grad():
        assert module(_clips(1)[0]).abs().max() > 1
    diffs = check_onnx(path, module, SHAPE, batches=(1, 3))
    assert set(diffs) == {1, 3}
    assert max(diffs.values()) < TOL, diffs


def _known_shapes(model) -> dict:
    """The shapes the file states, ``None`` for an unknown size."""
    return {
        info.name: [
            dim.dim_param or dim.dim_value or None
            for dim in info.type.tensor_type.shape.dim
        ]
        for info in list(model.graph.value_info) + list(model.graph.input)
    }


@pytest.mark.parametrize('exporter', ['legacy', 'dynamo'])
def test_exported_residual_sums_have_known_equal_shapes(
        small, exporter, tmp_path):
    """The file states every block's shapes, batch axis included, so that
    onnxruntime can tell that a residual sum adds two tensors of one shape
    (it then adds them inside the convolution, and plans their memory)."""
    module, _ = small
    path = str(tmp_path / f'small_{exporter}.onnx')
    export_onnx(module, path, SHAPE, exporter)
    model = onnx.load(path)
    shapes = _known_shapes(model)
    sums = [
        node for node in model.graph.node if node.op_type == 'Add' and all(
            len(shapes.get(name) or ()) == 4 for name in node.input)
    ]
    assert len(sums) == 8  # the 8 blocks of RSANet-R18
    for node in sums:
        first, second = (shapes[name] for name in node.input)
        assert None not in first and first == second, node.name


def test_store_shapes_leaves_a_file_it_cannot_infer(small, tmp_path,
                                                    monkeypatch):
    """Where shape inference fails the exported file is kept as it is,
    with a warning that names it."""
    from mmrsa.deployment.onnx import store_shapes
    module, _ = small
    path = str(tmp_path / 'small.onnx')
    export_onnx(module, path, SHAPE, 'legacy')
    before = open(path, 'rb').read()

    def fail(*args, **kwargs):
        raise onnx.shape_inference.InferenceError('[ShapeInferenceError] x')

    monkeypatch.setattr(onnx.shape_inference, 'infer_shapes_path', fail)
    with pytest.warns(UserWarning, match='could not be inferred'):
        store_shapes(path)
    assert open(path, 'rb').read() == before
    assert max(check_onnx(path, module, SHAPE).values()) < TOL


def test_legacy_export_of_the_frames_layout(small, tmp_path):
    module, _ = small
    shape = (4, 3, 32, 32)  # [N*T, C, H, W], one clip
    path = str(tmp_path / 'frames.onnx')
    export_onnx(module, path, shape, 'legacy', opset=13)
    assert onnx.load(path).opset_import[0].version == 13
    diffs = check_onnx(path, module, shape, batches=(1, 2))
    assert max(diffs.values()) < TOL, diffs


def test_torch_export_parity(small):
    module, _ = small
    clip, clip3 = _clips(2, 3)
    program = torch.export.export(
        module, (clip, ),
        dynamic_shapes=({
            0: torch.export.Dim('batch', min=1)
        }, ))
    exported = program.module()
    with torch.no_grad():
        for x in (clip, clip3):
            torch.testing.assert_close(
                exported(x), module(x), rtol=0, atol=TOL)


def test_jit_trace_parity(small):
    module, _ = small
    clip, clip3 = _clips(2, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        traced = torch.jit.trace(module, (clip, ))
        for x in (clip, clip3):
            torch.testing.assert_close(traced(x), module(x), rtol=0, atol=TOL)


@pytest.mark.parametrize(
    'kwargs,match',
    [(dict(exporter='onnxscript'), 'exporter must be one of'),
     (dict(shape=(1, 8, 3, 32, 32)), 'T=4 frames, the shape says T=8'),
     (dict(shape=(6, 3, 32, 32)), 'not whole clips'),
     (dict(shape=(1, 3, 32, 32, 1, 1)), r'\(N, T, C, H, W\)'),
     (dict(shape=(0, 4, 3, 32, 32)), 'positive sizes')])
def test_export_arguments_are_checked(small, tmp_path, kwargs, match):
    module, _ = small
    args = dict(shape=SHAPE, exporter='legacy')
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        export_onnx(module, str(tmp_path / 'x.onnx'), **args)
    assert not (tmp_path / 'x.onnx').exists()


def test_export_needs_eval_mode(small, tmp_path):
    module, _ = small
    module.train()
    try:
        with pytest.raises(ValueError, match='eval mode'):
            export_onnx(module, str(tmp_path / 'x.onnx'), SHAPE, 'legacy')
    finally:
        module.eval()


def test_clip_classifier_checks_its_input(small):
    module, _ = small
    with pytest.raises(ValueError, match=r'\[N, T, C, H, W\]'):
        module(torch.zeros(4, 3, 32))
    with pytest.raises(ValueError, match='num_segments must be positive'):
        ClipClassifier(module.recognizer, 0)


def test_profile_onnx(small, tmp_path):
    """onnxruntime's profiler, summed per operator type: the model's
    convolutions are there, and the RSA layers' single-channel filters are
    one grouped conv3d and one 2D convolution each, not one per bank."""
    from mmrsa.deployment.onnx import profile_onnx
    module, _ = small
    path = str(tmp_path / 'small.onnx')
    export_onnx(module, path, SHAPE, 'legacy')
    rows = profile_onnx(path, SHAPE, threads=1, runs=2)
    ops = {op: (ms, nodes) for op, ms, nodes in rows}
    assert 'Conv' in ops and all(ms >= 0 for ms, _ in ops.values())
    assert [ms for _, ms, _ in rows] == sorted((ms for _, ms, _ in rows),
                                               reverse=True)
    convs = [
        node for node in onnx.load(path).graph.node if node.op_type == 'Conv'
    ]
    # ResNet-18: 20 convolutions; each RSA layer replaces one 3x3
    # convolution by three (projection, H1, value filters)
    assert len(convs) == 20 + 2 * 2
