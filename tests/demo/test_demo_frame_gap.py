# Copyright (c) mmrsa contributors. All rights reserved.
"""demo/demo.py, run as a command, on frame folders: a gap in the
numbering is an error that names the missing frame, never a silent cut."""
import torch
from run_helpers import DEMO_CONFIG, REPO_ROOT, run_tool

from mmrsa.datasets.synthmotion import generate_synthmotion

DEMO = REPO_ROOT / 'demo' / 'demo.py'


def _checkpoint(path) -> str:
    from mmengine.config import Config

    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    model = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), path)
    return str(path)


def test_frame_folder_with_a_gap_is_refused(tmp_path):
    data = tmp_path / 'data'
    generate_synthmotion(str(data), num_train=0, num_val=1)
    clip = data / 'rawframes' / 'val_00000'
    frames = sorted(p.name for p in clip.iterdir())
    assert frames[:3] == ['00001.jpg', '00002.jpg', '00003.jpg']
    (clip / '00009.jpg').unlink()
    checkpoint = _checkpoint(tmp_path / 'model.pth')
    result = run_tool([DEMO, clip, DEMO_CONFIG, checkpoint], cwd=REPO_ROOT)
    assert result.returncode == 1
    assert 'Traceback' not in result.stderr
    assert (f"error: {clip}: frame '00009.jpg' is missing (frames "
            f"'00001.jpg' to '{frames[-1]}' must all exist)") \
        in result.stderr
    assert 'top-' not in result.stdout
