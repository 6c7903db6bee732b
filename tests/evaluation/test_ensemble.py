# Copyright (c) mmrsa contributors. All rights reserved.
"""mmrsa.evaluation.ensemble on dumps written in tmp_path.

The dumps have the layout of MMEngine's ``DumpResults`` as MMAction2's
``tools/test.py --dump`` writes it: a list with one ``ActionDataSample``
``to_dict()`` per video (``pred_score``, ``pred_label``, ``gt_label`` as
tensors, plus metainfo such as ``frame_dir``).
"""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmrsa.evaluation import (EnsembleError, ensemble, format_report,
                              load_dump, softmax, write_dump)


def dump(path: Path, scores, labels, names=None) -> Path:
    results = []
    for i, (score, label) in enumerate(zip(scores, labels)):
        score = torch.as_tensor(score, dtype=torch.float32)
        item = dict(
            num_classes=score.numel(),
            img_shape=(224, 224),
            pred_score=score,
            pred_label=score.argmax(keepdim=True),
            gt_label=torch.tensor([label]))
        if names is not None:
            item['frame_dir'] = names[i]
        results.append(item)
    with open(path, 'wb') as f:
        pickle.dump(results, f)
    return path


def test_dump_format_is_what_mmaction_test_writes(tmp_path):
    """A real ``ActionDataSample`` passed through ``DumpResults``."""
    from mmengine.evaluator import DumpResults

    import mmrsa  # noqa: F401
    from mmaction.structures import ActionDataSample
    sample = ActionDataSample()
    sample.set_gt_label(2)
    sample.set_pred_score(torch.tensor([0.1, 0.2, 0.7]))
    sample.set_pred_label(torch.tensor([2]))
    sample.set_metainfo(dict(frame_dir='vid_0', num_clips=16))
    path = tmp_path / 'real.pkl'
    metric = DumpResults(out_file_path=str(path))
    metric.process({}, [sample.to_dict()])
    metric.compute_metrics(metric.results)
    loaded = load_dump(str(path))
    assert loaded[0]['gt_label'] == 2 and loaded[0]['frame_dir'] == 'vid_0'
    np.testing.assert_allclose(
        loaded[0]['pred_score'], [0.1, 0.2, 0.7], rtol=1e-6)


def test_two_models_average_and_fix_each_others_mistakes(tmp_path):
    labels = [0, 1, 2, 1]
    # model A is right on videos 0, 1, 2; model B on 0, 2, 3; the average on
    # all four
    a = [[.7, .2, .1], [.1, .6, .3], [.2, .2, .6], [.5, .4, .1]]
    b = [[.6, .3, .1], [.45, .4, .15], [.1, .3, .6], [.1, .8, .1]]
    names = [f'v{i}' for i in range(4)]
    pa = dump(tmp_path / 'r50_8x2.pkl', a, labels, names)
    # the second model's dump lists the videos in another order
    order = [2, 0, 3, 1]
    pb = dump(tmp_path / 'r50_16x2.pkl', [b[i] for i in order],
              [labels[i] for i in order], [names[i] for i in order])
    out = tmp_path / 'en.pkl'
    result = ensemble([str(pa), str(pb)])
    write_dump(result, str(out))
    report = format_report(result)
    # rows: name, then top-1, top-3 (3 classes) and mean class accuracy
    top1 = {
        line.split()[0]: line.split()[-3]
        for line in report.splitlines()[1:4]  # after the header
    }
    assert top1[str(pa)] == '75.00' and top1[str(pb)] == '75.00'
    assert top1['ensemble'] == '100.00'

    fused = load_dump(str(out))
    np.testing.assert_allclose(
        np.stack([f['pred_score'] for f in fused]),
        (np.array(a) + np.array(b)) / 2,
        rtol=1e-6)
    assert [f['frame_dir'] for f in fused] == names
    assert [f['gt_label'] for f in fused] == labels


def test_weights_and_softmax_of_logits(tmp_path):
    labels = [0, 1]
    probs = np.array([[.8, .2], [.3, .7]])
    logits = np.array([[2., -1.], [0., 3.]])
    pa = dump(tmp_path / 'probs.pkl', probs, labels)
    pb = dump(tmp_path / 'logits.pkl', logits, labels)
    result = ensemble([str(pa), str(pb)], weights=[3, 1])
    assert [i['softmax'] for i in result['inputs']] == [False, True]
    expected = (3 * probs + softmax(logits)) / 4
    np.testing.assert_allclose(result['scores'], expected, rtol=1e-6)
    never = ensemble([str(pa), str(pb)], softmax_mode='never')
    np.testing.assert_allclose(
        never['scores'], (probs + logits) / 2, rtol=1e-6)


def test_refuses_dumps_of_different_videos(tmp_path):
    pa = dump(tmp_path / 'a.pkl', [[.6, .4], [.4, .6]], [0, 1])
    pb = dump(tmp_path / 'b.pkl', [[.6, .4], [.4, .6]], [1, 0])
    pc = dump(tmp_path / 'c.pkl', [[.6, .4]], [0])
    pd = dump(tmp_path / 'd.pkl', [[.2, .4, .4], [.4, .3, .3]], [0, 1])
    for other, message in ((pb, 'different labels'), (pc, '1 videos'),
                           (pd, 'classes')):
        with pytest.raises(EnsembleError, match=message):
            ensemble([str(pa), str(other)])
    with pytest.raises(EnsembleError, match='two or more'):
        ensemble([str(pa)])
    with pytest.raises(
            EnsembleError, match='one non-negative weight per file'):
        ensemble([str(pa), str(pa)], weights=[1])


def test_refuses_files_that_are_not_dumps_without_running_them(tmp_path):

    class Payload:

        def __reduce__(self):
            return (os.makedirs, (str(tmp_path / 'payload_ran'), ))

    evil = tmp_path / 'evil.pkl'
    with open(evil, 'wb') as f:
        pickle.dump([{'pred_score': Payload()}], f)
    text = tmp_path / 'scores.pkl'
    text.write_text('top1 0.5')
    good = dump(tmp_path / 'good.pkl', [[.5, .5]], [0])
    wrong = tmp_path / 'wrong.pkl'
    with open(wrong, 'wb') as f:
        pickle.dump({'acc/top1': 0.5}, f)
    for path, message in ((evil, 'refused to unpickle `os.makedirs`'),
                          (text, 'cannot read a dump'), (wrong,
                                                         'expected the dump')):
        with pytest.raises(EnsembleError, match=message):
            ensemble([str(good), str(path)])
    assert not (tmp_path / 'payload_ran').exists()


@pytest.mark.parametrize('mode', ['bogus'])
def test_bad_softmax_mode(tmp_path, mode):
    pa = dump(tmp_path / 'a.pkl', [[.6, .4]], [0])
    with pytest.raises(EnsembleError, match='softmax'):
        ensemble([str(pa), str(pa)], softmax_mode=mode)
